package brokerauth

import (
	"fmt"
	"strings"
)

// Role is a kind of login. Every login's MQTT client id must equal its
// user name, so a login can hold one session only and never another's.
type Role string

// The roles of the table.
const (
	// Device is one Pi: user name = its device_id.
	Device Role = "device"
	// Forwarder is one cloud-forwarder replica: user name = its FORWARDER_ID.
	Forwarder Role = "forwarder"
	// Operator is the fleet tool's login: it configures and commands devices.
	Operator Role = "operator"
	// Monitor reads the devices' status (heartbeats) and nothing else.
	Monitor Role = "monitor"
)

// Roles lists every role in the table's order.
var Roles = []Role{Device, Forwarder, Operator, Monitor}

// Self stands for the login's own user name in a rule's topics.
const Self = "<login>"

// sharePrefix opens a shared subscription's filter: "$share/GROUP/".
const sharePrefix = "$share/+/"

// Rule is one row of the table: what a login of a role may do. Topics are
// MQTT filters under the prefix; Self is the login's own name. A subscribe
// filter starting with "$share/+/" is a shared subscription in any group;
// a role may receive what its subscribe filters match, nothing else.
type Rule struct {
	Role      Role
	Login     string // who the login is, for the table's first column
	Publish   []string
	Subscribe []string
}

// Table is the permission table for the topic prefix (mqtt.topic_prefix,
// default "sensors"). Wildcards in it never let one device act for
// another: device ids contain no "$", "+", "#" or "/", and the levels that
// start with "$" ($group, $fleet) are written by the operator only.
func Table(prefix string) []Rule {
	t := func(format string) string { return prefix + "/" + strings.ReplaceAll(format, "@", Self) }
	return []Rule{{
		Role:      Device,
		Login:     "device (user name = its `device_id`)",
		Publish:   []string{t("@/+/reading"), t("@/status"), t("@/result")},
		Subscribe: []string{t("@/ack"), t("@/config"), t("@/cmd"), t("$group/+/config"), t("$group/+/update"), t("$fleet/config")},
	}, {
		Role:    Forwarder,
		Login:   "forwarder (user name = its `FORWARDER_ID`)",
		Publish: []string{t("+/ack")},
		Subscribe: []string{t("+/+/reading"), sharePrefix + t("+/+/reading"),
			t("+/status"), sharePrefix + t("+/status")},
	}, {
		Role:    Operator,
		Login:   "operator (the fleet tool)",
		Publish: []string{t("+/config"), t("$group/+/config"), t("$fleet/config"), t("+/cmd"), t("$group/+/update")},
		// It reads back what it publishes (the desired config) and the results.
		Subscribe: []string{t("+/result"), t("+/config"), t("$group/+/config"), t("$fleet/config"), t("$group/+/update")},
	}, {
		Role:      Monitor,
		Login:     "monitoring (dashboards, alerts)",
		Subscribe: []string{t("+/status")},
	}}
}

// rule returns the table's rule for role.
func rule(table []Rule, role Role) (Rule, bool) {
	for _, r := range table {
		if r.Role == role {
			return r, true
		}
	}
	return Rule{}, false
}

// Markdown renders the table as a Markdown table, the text README.md and
// docs/FORWARDER.md show.
func Markdown(prefix string) string {
	var b strings.Builder
	b.WriteString("| login | client id | publish | subscribe (and receive) |\n|---|---|---|---|\n")
	for _, r := range Table(prefix) {
		fmt.Fprintf(&b, "| %s | = user name | %s | %s |\n", r.Login, codeList(r.Publish), codeList(r.Subscribe))
	}
	return b.String()
}

func codeList(topics []string) string {
	if len(topics) == 0 {
		return "nothing"
	}
	return "`" + strings.Join(topics, "`, `") + "`"
}

// expand replaces Self in topic with the login's name.
func expand(topic, login string) string { return strings.ReplaceAll(topic, Self, login) }

// receiveFilter is the topic filter a subscribe filter receives on: a
// shared subscription's without "$share/GROUP/".
func receiveFilter(sub string) (filter string, shared bool) {
	if f, ok := strings.CutPrefix(sub, sharePrefix); ok {
		return f, true
	}
	return sub, false
}
