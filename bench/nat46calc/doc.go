// Package nat46calc benchmarks the nat46calc log filter side by side with
// the I/O floor (a sed pass-through) and with ipv6calc, the closest
// existing tool, which converts one address per line in its pipe mode.
//
// Build the commands first, then run the benchmarks:
//
//	make && go test -run '^$' -bench . ./bench/nat46calc/
//
// Each benchmark runs the real command over a generated file and reports
// MB/s of input and addrs/s (addresses in the input per second). The
// access log is nginx combined format: 30% of its lines come from clients
// inside the NAT46 prefix, 30% from other IPv6 clients and 40% are
// application lines without addresses. ipv6calc only knows the well-known
// prefix 64:ff9b::/96 and stops at the first line that is not an address,
// so it gets a file of such addresses alone, and nat46calc is measured on
// that file too.
package nat46calc
