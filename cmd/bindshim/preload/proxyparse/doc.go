// Package proxyparse exposes the PROXY protocol parser of bindshim's
// preload library (../proxy.c) to Go, for tests only: the C parser is
// checked against github.com/pires/go-proxyproto, which writes the headers
// it reads, on generated headers and under go test -fuzz.
//
// Only the parser is compiled here, never the interposers of
// ../bindshim.c, so the test binary does not interpose itself. proxy.c and
// proxy.h here are symbolic links to the library's files rather than
// #include "../proxy.c", because the go command hashes the files of a
// package's own directory and would otherwise test a stale parser from its
// build cache after an edit. The package needs cgo; without it, it is
// empty.
package proxyparse
