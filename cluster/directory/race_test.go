//go:build race

package directory_test

// race says the test binary was built with -race: the sluice binary a
// test builds is built the same way, so that it reuses the packages the
// test run compiled.
const race = true
