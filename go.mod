module github.com/snitools/snitools

go 1.26.0
