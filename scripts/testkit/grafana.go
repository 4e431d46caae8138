package testkit

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// FleetDashboard is the Grafana Fleet dashboard, from the repository root.
const FleetDashboard = "docs/dashboards/grafana/dashboards/fleet.json"

// NotReportingSQL is the SQL of the "Not reporting" panel of the Fleet
// dashboard at path, as Grafana runs it, wrapped to return its device ids
// sorted: what the e2e fleet run and the binaries' fleet test compare
// `cloud-forwarder fleet status` with.
func NotReportingSQL(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("the Fleet dashboard: %w", err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RawSQL string `json:"rawSql"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	for _, p := range d.Panels {
		if strings.HasPrefix(p.Title, "Not reporting") && len(p.Targets) == 1 {
			return "SELECT device_id FROM (" + p.Targets[0].RawSQL + ") AS q ORDER BY device_id", nil
		}
	}
	return "", fmt.Errorf("%s: no \"Not reporting\" panel with one query", path)
}
