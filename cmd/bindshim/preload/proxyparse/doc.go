// Package proxyparse exposes the parsers of bindshim's preload library to
// Go, for tests only: the PROXY protocol parser (../proxy.c) is checked
// against github.com/pires/go-proxyproto, which writes the headers it
// reads, on generated headers and under go test -fuzz; the handoff message
// parser (../handoff.c) against lib/handoff, which writes and reads the
// same messages.
//
// Only the parsers are compiled here, never the interposers of
// ../bindshim.c, so the test binary does not interpose itself. The .c and
// .h files here are symbolic links to the library's files rather than
// #include "../proxy.c", because the go command hashes the files of a
// package's own directory and would otherwise test a stale parser from its
// build cache after an edit. The package needs cgo; without it, it is
// empty.
package proxyparse
