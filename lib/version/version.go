// Package version holds the toolkit's version, set at link time by the
// Makefile from `git describe` (-ldflags -X).
package version

// Version is the release this build comes from; "dev" outside the Makefile.
var Version = "dev"

// LibDir is where `make install` puts helper libraries such as
// libbindshim.so; set at link time.
var LibDir = "/usr/local/lib/snitools"
