//go:build race

package faults

func init() { testBinaryRace = true }
