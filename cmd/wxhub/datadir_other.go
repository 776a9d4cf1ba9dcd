//go:build !unix

package main

// lockDataDir does not lock on systems without flock.
func lockDataDir(string) (func(), error) { return func() {}, nil }
