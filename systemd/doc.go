// Package systemd holds no Go code: this folder ships the systemd units and
// the default configs that the .deb, scripts/install-pi.sh and
// scripts/flash-sd.sh install. Its tests check them with systemd-analyze
// (verify, and security exposure below 3.0) and with the agent's config
// loader, so a broken unit or config fails `make test`.
//
//   - edge-agent.service: the hardened agent unit (Type=notify, watchdog).
//   - cloud-forwarder.service: the forwarder on a plain host.
//   - edge-agent.config.yaml: the commented default config (the .deb's conffile).
//   - config.example.yaml: a real Pi with a BME280, a DHT22 and a DS18B20.
package systemd
