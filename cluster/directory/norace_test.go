//go:build !race

package directory_test

// race says the test binary was built with -race (see race_test.go).
const race = false
