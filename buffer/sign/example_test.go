package sign_test

import (
	"errors"
	"fmt"

	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// A forwarder signs with its private key; a device verifies with the
// keyring of every forwarder key it trusts. The purpose keeps a signature
// from being reused for another kind of message.
func Example() {
	signer, err := sign.LoadSigner("testdata/forwarder-a.key") // openssl genpkey -algorithm ed25519
	if err != nil {
		fmt.Println(err)
		return
	}
	keys, err := sign.LoadVerifier("testdata/keyring.pub") // openssl pkey -pubout, two keys
	if err != nil {
		fmt.Println(err)
		return
	}
	msg := []byte(`pi-greenhouse-1 48200-48213`)
	sig := signer.Sign("sensorpipe example v1", msg)

	fmt.Println(keys.Verify("sensorpipe example v1", msg, sig))
	err = keys.Verify("sensorpipe other v1", msg, sig)
	fmt.Println(errors.Is(err, sign.ErrBadSignature))
	// Output:
	// <nil>
	// true
}
