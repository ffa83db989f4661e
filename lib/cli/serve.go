package cli

import (
	"context"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/snitools/snitools/lib/listener"
)

// Server is what a daemon serves its listeners with.
type Server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Active() int
}

// Serve runs srv on every listener, logging each with attrs, tells systemd
// it is ready, and waits for a signal on signals (which the caller
// subscribed before opening the listeners, so that a stop right after
// READY drains instead of killing) or for a listener to fail. It then says
// STOPPING, lets open connections finish for up to timeout and returns the
// exit status: 0 after a signal, 1 after a failure.
func Serve(srv Server, lns []net.Listener, signals <-chan os.Signal, timeout time.Duration, log *slog.Logger, attrs ...any) int {
	return ServeDatagrams(srv, lns, nil, nil, signals, timeout, log, attrs...)
}

// DatagramServer is what a daemon serves its UDP sockets with
// (snilisten's QUIC).
type DatagramServer interface {
	Serve(*net.UDPConn) error
	Shutdown(context.Context) error
	Active() int
}

// ServeDatagrams is Serve for a daemon that also serves UDP sockets pcs
// with dsrv (nil if pcs is empty). On a signal both servers shut down
// within the one timeout.
func ServeDatagrams(srv Server, lns []net.Listener, dsrv DatagramServer, pcs []*net.UDPConn, signals <-chan os.Signal, timeout time.Duration, log *slog.Logger, attrs ...any) int {
	served := make(chan error, len(lns)+len(pcs))
	for _, ln := range lns {
		log.Info("listening", append([]any{"address", ln.Addr().String()}, attrs...)...)
		go func() { served <- srv.Serve(ln) }()
	}
	for _, pc := range pcs {
		log.Info("listening", append([]any{"address", "udp:" + pc.LocalAddr().String()}, attrs...)...)
		go func() {
			err := dsrv.Serve(pc)
			if err != nil {
				served <- err
			}
		}()
	}
	listener.Notify("READY=1")
	status := 0
	select {
	case sig := <-signals:
		open := srv.Active()
		if dsrv != nil {
			open += dsrv.Active()
		}
		log.Info("shutting down", "signal", sig.String(), "open", open, "timeout", timeout)
	case err := <-served:
		log.Error("listener failed", "error", err.Error())
		status = 1
	}
	listener.Notify("STOPPING=1")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if dsrv != nil {
		dsrv.Shutdown(ctx)
	}
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown timeout: open connections cut", "timeout", timeout)
	}
	return status
}
