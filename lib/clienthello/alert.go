package clienthello

import (
	"fmt"
	"io"
)

// Alert is a TLS alert description (RFC 8446, section 6), sent to a client
// that cannot be served so that it sees a reason instead of a bare reset.
type Alert uint8

// Alerts a dispatcher sends before any server has seen the hello.
const (
	AlertUnexpectedMessage Alert = 10
	AlertRecordOverflow    Alert = 22
	AlertHandshakeFailure  Alert = 40
	AlertIllegalParameter  Alert = 47
	AlertDecodeError       Alert = 50
	AlertProtocolVersion   Alert = 70
	AlertInternalError     Alert = 80
	AlertUnrecognizedName  Alert = 112
	alertLevelFatal              = 2
	recordTypeAlert              = 21
	recordVersionForAlerts       = 0x0303
)

// String returns the alert's name as in the RFC.
func (a Alert) String() string {
	switch a {
	case AlertUnexpectedMessage:
		return "unexpected_message"
	case AlertRecordOverflow:
		return "record_overflow"
	case AlertIllegalParameter:
		return "illegal_parameter"
	case AlertHandshakeFailure:
		return "handshake_failure"
	case AlertDecodeError:
		return "decode_error"
	case AlertProtocolVersion:
		return "protocol_version"
	case AlertInternalError:
		return "internal_error"
	case AlertUnrecognizedName:
		return "unrecognized_name"
	}
	return fmt.Sprintf("alert(%d)", uint8(a))
}

// Record returns the alert as a complete, unencrypted TLS record: valid at
// any point before the server's first flight.
func (a Alert) Record() [7]byte {
	return [7]byte{recordTypeAlert, recordVersionForAlerts >> 8, recordVersionForAlerts & 0xff, 0, 2, alertLevelFatal, byte(a)}
}

// WriteAlert writes a fatal alert record to w.
func WriteAlert(w io.Writer, a Alert) error {
	rec := a.Record()
	if _, err := w.Write(rec[:]); err != nil {
		return fmt.Errorf("send TLS alert %v: %w", a, err)
	}
	return nil
}
