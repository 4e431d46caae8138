package brokerauth

// Hash exposes hash for the test vectors.
var Hash = hash
