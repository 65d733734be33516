package auth

import (
	"fmt"
	"math"
	"unicode"
)

// MinSecretBits is the least estimated entropy a configured secret needs.
const MinSecretBits = 128

// SecretBits estimates a secret's entropy: its length times log2 of the
// alphabet its character classes span (lower, upper, digits, other). A
// secret with fewer than 8 distinct characters counts as its distinct
// characters only, so "aaaa..." of any length is refused.
func SecretBits(s string) float64 {
	var lower, upper, digit, other bool
	distinct := map[rune]bool{}
	n := 0
	for _, r := range s {
		n++
		distinct[r] = true
		switch {
		case unicode.IsLower(r):
			lower = true
		case unicode.IsUpper(r):
			upper = true
		case unicode.IsDigit(r):
			digit = true
		default:
			other = true
		}
	}
	alphabet := 0
	for ok, size := range map[*bool]int{&lower: 26, &upper: 26, &digit: 10, &other: 33} {
		if *ok {
			alphabet += size
		}
	}
	if alphabet == 0 {
		return 0
	}
	if len(distinct) < 8 {
		return float64(len(distinct)) * math.Log2(float64(alphabet))
	}
	return float64(n) * math.Log2(float64(alphabet))
}

// CheckSecretStrength refuses secrets below MinSecretBits.
func CheckSecretStrength(s string) error {
	if b := SecretBits(s); b < MinSecretBits {
		return fmt.Errorf("the secret has about %.0f bits of entropy; at least %d are required (e.g. 32 random bytes, base64: openssl rand -base64 32)", b, MinSecretBits)
	}
	return nil
}
