package quic

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
)

// version holds what differs between the QUIC versions understood here:
// the Initial salt, the HKDF labels and the long header packet types.
type version struct {
	number uint32
	name   string
	salt   []byte
	// HKDF-Expand-Label info for the client's Initial key, IV and header
	// protection key (RFC 9001, section 5.1; RFC 9369, section 3.3.2).
	keyInfo, ivInfo, hpInfo string
	// Long header packet types (RFC 9000, section 17.2; RFC 9369, 3.2).
	initial, zeroRTT, handshake, retry byte
}

const (
	// Version1 is QUIC version 1 (RFC 9000).
	Version1 = 0x00000001
	// Version2 is QUIC version 2 (RFC 9369).
	Version2 = 0x6b3343cf
)

var (
	v1 = version{
		number: Version1,
		name:   "QUICv1",
		salt: []byte{0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17,
			0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a},
		keyInfo: expandLabelInfo("quic key", 16),
		ivInfo:  expandLabelInfo("quic iv", 12),
		hpInfo:  expandLabelInfo("quic hp", 16),
		initial: 0, zeroRTT: 1, handshake: 2, retry: 3,
	}
	v2 = version{
		number: Version2,
		name:   "QUICv2",
		salt: []byte{0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93,
			0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9},
		keyInfo: expandLabelInfo("quicv2 key", 16),
		ivInfo:  expandLabelInfo("quicv2 iv", 12),
		hpInfo:  expandLabelInfo("quicv2 hp", 16),
		initial: 1, zeroRTT: 2, handshake: 3, retry: 0,
	}
	clientInInfo = expandLabelInfo("client in", sha256.Size)
)

// lookupVersion returns what is known of a QUIC version, nil if nothing.
func lookupVersion(n uint32) *version {
	switch n {
	case Version1:
		return &v1
	case Version2:
		return &v2
	}
	return nil
}

// expandLabelInfo is the HkdfLabel structure of TLS 1.3 (RFC 8446,
// section 7.1) with an empty context, the info of HKDF-Expand-Label.
func expandLabelInfo(label string, length int) string {
	label = "tls13 " + label
	return string([]byte{byte(length >> 8), byte(length), byte(len(label))}) + label + "\x00"
}

// secrets are a client's Initial secrets; kept apart from the ciphers so
// that the tests can compare them with the RFC vectors.
type secrets struct {
	client  []byte // client_initial_secret
	key, iv []byte
	hp      []byte
}

// initialSecrets derives the client's Initial secrets from the first
// Destination Connection ID (RFC 9001, section 5.2).
func initialSecrets(v *version, dcid []byte) (secrets, error) {
	var s secrets
	initial, err := hkdf.Extract(sha256.New, dcid, v.salt)
	if err != nil {
		return s, fmt.Errorf("quic: initial secret: %w", err)
	}
	if s.client, err = hkdf.Expand(sha256.New, initial, clientInInfo, sha256.Size); err != nil {
		return s, fmt.Errorf("quic: client initial secret: %w", err)
	}
	if s.key, err = hkdf.Expand(sha256.New, s.client, v.keyInfo, 16); err != nil {
		return s, fmt.Errorf("quic: client initial key: %w", err)
	}
	if s.iv, err = hkdf.Expand(sha256.New, s.client, v.ivInfo, 12); err != nil {
		return s, fmt.Errorf("quic: client initial iv: %w", err)
	}
	if s.hp, err = hkdf.Expand(sha256.New, s.client, v.hpInfo, 16); err != nil {
		return s, fmt.Errorf("quic: client header protection key: %w", err)
	}
	return s, nil
}

// keys are what removes the protection of a client's Initial packets.
type keys struct {
	v       *version
	dcid    [maxCIDLen]byte
	dcidLen int
	aead    cipher.AEAD  // AEAD_AES_128_GCM
	hp      cipher.Block // AES-128 for the header protection mask
	iv      [12]byte
}

// derive sets k to the client Initial keys of version v and connection
// ID dcid, unless it holds them already: the keys depend only on those two,
// so a flow (or a reused Assembler) derives them once.
func (k *keys) derive(v *version, dcid []byte) error {
	if k.aead != nil && k.v == v && string(k.dcid[:k.dcidLen]) == string(dcid) {
		return nil
	}
	k.aead = nil
	s, err := initialSecrets(v, dcid)
	if err != nil {
		return err
	}
	block, err := aes.NewCipher(s.key)
	if err != nil {
		return fmt.Errorf("quic: AES key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return fmt.Errorf("quic: AES-GCM: %w", err)
	}
	if k.hp, err = aes.NewCipher(s.hp); err != nil {
		return fmt.Errorf("quic: header protection key: %w", err)
	}
	k.v, k.dcidLen, k.aead = v, copy(k.dcid[:], dcid), aead
	copy(k.iv[:], s.iv)
	return nil
}
