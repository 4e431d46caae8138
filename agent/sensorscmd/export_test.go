package sensorscmd

// RunWithI2C is Run with fixture I2C buses.
var RunWithI2C = run
