//go:build !race

package seedtest

const raceEnabled = false
