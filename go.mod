module github.com/snitools/snitools

go 1.26.0

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/miekg/dns v1.1.73
	github.com/pires/go-proxyproto v0.15.0
	golang.org/x/crypto v0.58.0
	golang.org/x/sys v0.49.0
)

require golang.org/x/net v0.60.0 // indirect
