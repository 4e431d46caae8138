package release_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// The operator signs a manifest per binary with the release key and
// offers the release to a group with the fleet key; a device opens the
// offer with its pinned fleet keys and decides with its release keys.
func Example() {
	releaseKey, _ := sign.LoadSigner("testdata/release.key") // operator only
	fleetKey, _ := sign.LoadSigner("testdata/fleet.key")     // operator only
	releaseKeys, _ := sign.LoadVerifier("testdata/release.pub")
	fleetKeys, _ := sign.LoadVerifier("testdata/fleet.pub")

	m := release.Manifest{
		Version: "1.6.0", Arch: release.ArchARMv7, Size: 4,
		SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		URL:    "https://releases.example/" + release.BinaryFile("1.6.0", release.ArchARMv7),
	}
	signed, err := release.SignManifest(m, releaseKey) // the file edge-agent_1.6.0_armv7.manifest.json
	if err != nil {
		fmt.Println(err)
		return
	}
	payload, err := release.SignOffer(release.Offer{
		Rollout: "r1", Group: "greenhouses", Version: "1.6.0", Percent: 100,
		State: release.StateActive, Issued: time.Now(), Manifests: []json.RawMessage{signed},
	}, fleetKey)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(release.OfferTopic("sensors", "greenhouses"))

	// On the device:
	offer, err := release.OpenOffer(payload, "greenhouses", fleetKeys)
	if err != nil {
		fmt.Println(err)
		return
	}
	dev := release.Device{ID: "pi-1", Group: "greenhouses", Arch: release.ArchARMv7, Version: "1.5.0"}
	got, err := release.Decide(offer, dev, releaseKeys)
	fmt.Println(got.Version, got.Arch, err)

	dev.Version = "dev"
	_, err = release.Decide(offer, dev, releaseKeys)
	fmt.Println(errors.Is(err, release.ErrNotRelease))
	// Output:
	// sensors/$group/greenhouses/update
	// 1.6.0 armv7 <nil>
	// true
}
