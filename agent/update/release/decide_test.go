package release_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// idsAround returns a device id in a 10 % rollout and one out of it.
func idsAround(t *testing.T, percent float64) (in, out string) {
	t.Helper()
	for i := 0; in == "" || out == ""; i++ {
		id := fmt.Sprintf("pi-%d", i)
		if release.InRollout(id, percent) {
			in = id
		} else {
			out = id
		}
	}
	return in, out
}

func TestDecide(t *testing.T) {
	rel, fleet := loadKeys(t)
	stranger, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	in, out := idsAround(t, 10)
	dev := release.Device{ID: in, Group: "gh", Arch: "arm64", Version: "1.5.0"}
	canary := offer(t, rel, "1.6.0")
	canary.Percent = 10
	withManifest := func(m release.Manifest, s release.Signer) release.Offer {
		o := canary
		o.Manifests = append([]json.RawMessage(nil), canary.Manifests...)
		for i := range o.Manifests {
			u, _ := release.ParseManifestUnverified(o.Manifests[i])
			if u.Arch == m.Arch {
				o.Manifests[i] = mustSignManifest(t, m, s)
			}
		}
		return o
	}
	change := func(f func(*release.Offer)) release.Offer {
		o := canary
		f(&o)
		return o
	}
	devWith := func(f func(*release.Device)) release.Device {
		d := dev
		f(&d)
		return d
	}
	minVersion := manifest("1.6.0", "arm64")
	minVersion.MinVersion = "1.5.2"
	tests := []struct {
		name  string
		offer release.Offer
		dev   release.Device
		want  error
	}{
		{"takes it", canary, dev, nil},
		{"v prefix", canary, devWith(func(d *release.Device) { d.Version = "v1.5.0" }), nil},
		{"pre-release of the same version", canary, devWith(func(d *release.Device) { d.Version = "1.6.0-rc.2" }), nil},
		{"any group when unset", canary, devWith(func(d *release.Device) { d.Group = "" }), nil},
		{"other group", canary, devWith(func(d *release.Device) { d.Group = "barns" }), release.ErrGroup},
		{"aborted", change(func(o *release.Offer) { o.State = release.StateAborted }), dev, release.ErrAborted},
		{"replayed: issued before the newest seen", canary, devWith(func(d *release.Device) { d.NewestOffer = canary.Issued.Add(time.Millisecond) }), release.ErrReplayed},
		{"the newest seen again (a reconnect)", canary, devWith(func(d *release.Device) { d.NewestOffer = canary.Issued }), nil},
		{"newer than any seen", canary, devWith(func(d *release.Device) { d.NewestOffer = canary.Issued.Add(-time.Hour) }), nil},
		{"dev build", canary, devWith(func(d *release.Device) { d.Version = "dev" }), release.ErrNotRelease},
		{"git hash build", canary, devWith(func(d *release.Device) { d.Version = "4b8e905" }), release.ErrNotRelease},
		{"not in the canaries", canary, devWith(func(d *release.Device) { d.ID = out }), release.ErrNotInRollout},
		{"in at 100 %", change(func(o *release.Offer) { o.Percent = 100 }), devWith(func(d *release.Device) { d.ID = out }), nil},
		{"none at 0 %", change(func(o *release.Offer) { o.Percent = 0 }), dev, release.ErrNotInRollout},
		{"other arch", canary, devWith(func(d *release.Device) { d.Arch = "riscv64" }), release.ErrNoArch},
		{"arch missing from offer", change(func(o *release.Offer) { o.Manifests = o.Manifests[:1] }), devWith(func(d *release.Device) { d.Arch = "amd64" }), release.ErrNoArch},
		{"manifest signed by a stranger", withManifest(manifest("1.6.0", "arm64"), stranger), dev, release.ErrSignature},
		{"manifest signed by the fleet key", withManifest(manifest("1.6.0", "arm64"), fleet), dev, release.ErrSignature},
		{"manifest signed for another purpose", withManifest(manifest("1.6.0", "arm64"), purposeSigner{rel, release.OfferPurpose}), dev, release.ErrSignature},
		{"manifest unsigned", change(func(o *release.Offer) {
			o.Manifests = append([]json.RawMessage(nil), canary.Manifests...)
			o.Manifests[2] = with(o.Manifests[2], "sig", "")
		}), dev, release.ErrSignature},
		{"another arch's manifest forged", withManifest(manifest("1.6.0", "amd64"), stranger), dev, nil},
		{"manifest of another version", withManifest(manifest("1.7.0", "arm64"), rel), dev, release.ErrMalformed},
		{"rolled back before", canary, devWith(func(d *release.Device) { d.Failed = []string{"1.5.1", "v1.6.0"} }), release.ErrFailedBefore},
		{"other version rolled back", canary, devWith(func(d *release.Device) { d.Failed = []string{"1.5.1", "dev"} }), nil},
		{"same version", canary, devWith(func(d *release.Device) { d.Version = "1.6.0" }), release.ErrNotNewer},
		{"same version with build metadata", canary, devWith(func(d *release.Device) { d.Version = "1.6.0+pi" }), release.ErrNotNewer},
		{"downgrade", canary, devWith(func(d *release.Device) { d.Version = "1.7.0" }), release.ErrNotNewer},
		{"below min_version", withManifest(minVersion, rel), dev, release.ErrTooOld},
		{"at min_version", withManifest(minVersion, rel), devWith(func(d *release.Device) { d.Version = "1.5.2" }), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := release.Decide(tt.offer, tt.dev, rel.Verifier())
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if m.Arch != tt.dev.Arch || m.Version != "1.6.0" {
					t.Fatalf("manifest %+v", m)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if m != (release.Manifest{}) {
				t.Fatalf("a refusal returned a manifest: %+v", m)
			}
		})
	}
	if _, err := release.Decide(canary, dev, nil); !errors.Is(err, release.ErrSignature) {
		t.Fatalf("no release keys: %v", err)
	}
}

func TestNextIssued(t *testing.T) {
	now := time.Date(2026, 12, 6, 16, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		prev *release.Offer
		want time.Time
	}{
		{"no offer yet", nil, now},
		{"older offer", &release.Offer{Issued: now.Add(-time.Hour)}, now},
		{"same instant", &release.Offer{Issued: now}, now.Add(time.Millisecond)},
		{"another operator's clock ahead", &release.Offer{Issued: now.Add(time.Hour)}, now.Add(time.Hour + time.Millisecond)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := release.NextIssued(tt.prev, now)
			if !got.Equal(tt.want) {
				t.Fatalf("NextIssued = %v, want %v", got, tt.want)
			}
			dev := release.Device{NewestOffer: now}
			if tt.prev != nil {
				dev.NewestOffer = tt.prev.Issued
			}
			if got.Before(dev.NewestOffer) {
				t.Fatalf("a device that saw the previous offer would refuse the next as a replay")
			}
		})
	}
}
