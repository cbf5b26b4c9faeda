package keyring

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/google/uuid"
)

// Place is where a ciphertext lives: the table, the row (its primary key as text) and
// the column. It is bound into the ciphertext, so a ciphertext copied to another row,
// column, table or tenant does not open. All three fields are required: a caller that
// inserts a new row generates its id first (uuid.New()) and seals for that id.
type Place struct {
	Table  string
	Row    string
	Column string
}

func (p Place) validate() error {
	if p.Table == "" || p.Row == "" || p.Column == "" {
		return fmt.Errorf("%w: table, row and column are all required", ErrInvalidPlace)
	}
	return nil
}

// Ciphertext format, version 1 (all integers big-endian):
//
//	offset  size  field
//	0       1     format version (0x01)
//	1       4     key version: the tenant_keys.version of the data key (1 … 2^31-1)
//	5       12    GCM nonce, random, drawn by the FIPS module
//	17      n     AES-256-GCM ciphertext of the n plaintext bytes
//	17+n    16    GCM tag
//
// Overhead: 33 bytes. The additional authenticated data (not stored) is
//
//	"mimoto/keyring/data" 0x00 | format version | key version | tenant id (16 bytes) |
//	len(table) (4) | table | len(row) (4) | row | len(column) (4) | column
//
// Length prefixes keep the encoding injective: Place{"ab","c",…} and Place{"a","bc",…}
// give different additional data.
const (
	formatV1   = 0x01
	headerSize = 1 + 4
	dataLabel  = "mimoto/keyring/data"
	// Overhead is how many bytes Seal adds to the plaintext.
	Overhead = headerSize + gcmNonceSize + gcmTagSize
)

func dataAAD(tenant uuid.UUID, keyVersion uint32, p Place) []byte {
	n := len(dataLabel) + 1 + headerSize + 16 + 12 + len(p.Table) + len(p.Row) + len(p.Column)
	aad := make([]byte, 0, n)
	aad = append(aad, dataLabel...)
	aad = append(aad, 0, formatV1)
	aad = binary.BigEndian.AppendUint32(aad, keyVersion)
	aad = append(aad, tenant[:]...)
	for _, s := range [...]string{p.Table, p.Row, p.Column} {
		aad = binary.BigEndian.AppendUint32(aad, uint32(len(s)))
		aad = append(aad, s...)
	}
	return aad
}

// sealWith encrypts under an unwrapped data key. It allocates the output once.
func sealWith(k *dataKey, tenant uuid.UUID, keyVersion uint32, p Place, plaintext []byte) []byte {
	out := make([]byte, headerSize, headerSize+gcmNonceSize+len(plaintext)+gcmTagSize)
	out[0] = formatV1
	binary.BigEndian.PutUint32(out[1:], keyVersion)
	return k.aead.Seal(out, nil, plaintext, dataAAD(tenant, keyVersion, p))
}

func openWith(k *dataKey, tenant uuid.UUID, keyVersion uint32, p Place, ciphertext []byte) ([]byte, error) {
	pt, err := k.aead.Open(nil, nil, ciphertext[headerSize:], dataAAD(tenant, keyVersion, p))
	if err != nil {
		return nil, ErrDecrypt
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

// parseHeader checks the format and returns the key version.
func parseHeader(ciphertext []byte) (uint32, error) {
	if len(ciphertext) < Overhead {
		return 0, fmt.Errorf("%w (malformed: too short)", ErrDecrypt)
	}
	if ciphertext[0] != formatV1 {
		return 0, fmt.Errorf("%w (malformed: unknown format version)", ErrDecrypt)
	}
	v := binary.BigEndian.Uint32(ciphertext[1:headerSize])
	if v == 0 || v > math.MaxInt32 {
		return 0, fmt.Errorf("%w (malformed: key version out of range)", ErrDecrypt)
	}
	return v, nil
}

// KeyVersion returns the data-key version a ciphertext was sealed under, without
// decrypting it. Compliance checks use it to find ciphertext under retired keys or
// values that are not keyring envelopes at all (errors.Is(err, ErrDecrypt)).
func KeyVersion(ciphertext []byte) (int, error) {
	v, err := parseHeader(ciphertext)
	return int(v), err
}
