package drivers

import (
	"fmt"
	"math"

	"go.yaml.in/yaml/v3"
)

// Deadband maps a value key (temperature_c) to the least change that makes
// a reading worth storing (Spec.Deadband). The agent config checks the
// amounts; this type only makes a wrong shape (a list, a string, an
// amount with a unit) an error that names the key.
type Deadband map[string]float64

// UnmarshalYAML accepts a mapping of value keys to numbers.
func (d *Deadband) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: deadband must be a mapping of value key to amount, like {temperature_c: 0.1}", n.Line)
	}
	out := make(Deadband, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var amount float64
		if v.Kind != yaml.ScalarNode || v.Decode(&amount) != nil || math.IsNaN(amount) || math.IsInf(amount, 0) {
			return fmt.Errorf("line %d: deadband.%s: %q is not a number (an amount in the value's own unit, like 0.1)", v.Line, k.Value, v.Value)
		}
		if _, dup := out[k.Value]; dup {
			return fmt.Errorf("line %d: deadband.%s is given twice", k.Line, k.Value)
		}
		out[k.Value] = amount
	}
	*d = out
	return nil
}
