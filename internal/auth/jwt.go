package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/arcacache/arca/internal/metadata"
)

// KeyStore keeps the JWT signing keys, shared by every replica.
type KeyStore interface {
	SigningKeys(ctx context.Context) ([]metadata.SigningKey, error)
	AddSigningKey(ctx context.Context, k metadata.SigningKey, notAfter, pruneBefore time.Time) error
}

// Issuer is the iss claim of arca's access tokens.
const Issuer = "arca"

// Claims are an access token's claims: the Docker token spec's, plus the
// kind of identity the subject names (admin or token).
type Claims struct {
	jwt.RegisteredClaims
	Access []Scope `json:"access"`
	Kind   string  `json:"arca_kind,omitempty"`
}

// Keyring signs and verifies access tokens (HS256) with keys from the
// metadata store. The newest key signs; it is replaced after RotateAfter,
// and a replaced key keeps verifying until every token it signed expired.
type Keyring struct {
	store       KeyStore
	rotateAfter time.Duration
	tokenTTL    time.Duration
	now         func() time.Time

	keys     atomic.Pointer[[]metadata.SigningKey] // newest first
	reloadMu sync.Mutex
	loadedAt time.Time // under reloadMu
}

// NewKeyring returns a Keyring; tokenTTL is the longest access-token lifetime.
func NewKeyring(store KeyStore, rotateAfter, tokenTTL time.Duration, now func() time.Time) (*Keyring, error) {
	if store == nil || rotateAfter <= 0 || tokenTTL <= 0 {
		return nil, errors.New("auth: keyring needs a store and positive durations")
	}
	if now == nil {
		now = time.Now
	}
	k := &Keyring{store: store, rotateAfter: rotateAfter, tokenTTL: tokenTTL, now: now}
	k.keys.Store(&[]metadata.SigningKey{})
	return k, nil
}

// reload reads the keys again, at most once per second unless force.
func (k *Keyring) reload(ctx context.Context, force bool) error {
	k.reloadMu.Lock()
	defer k.reloadMu.Unlock()
	if !force && k.now().Sub(k.loadedAt) < time.Second {
		return nil
	}
	keys, err := k.store.SigningKeys(ctx)
	if err != nil {
		return err
	}
	k.keys.Store(&keys)
	k.loadedAt = k.now()
	return nil
}

// signingKey returns the current key, creating or rotating it as needed.
func (k *Keyring) signingKey(ctx context.Context) (metadata.SigningKey, error) {
	keys := *k.keys.Load()
	if len(keys) > 0 && k.now().Sub(keys[0].Created) < k.rotateAfter {
		return keys[0], nil
	}
	if err := k.reload(ctx, true); err != nil {
		return metadata.SigningKey{}, err
	}
	keys = *k.keys.Load()
	if len(keys) > 0 && k.now().Sub(keys[0].Created) < k.rotateAfter {
		return keys[0], nil
	}
	secret := make([]byte, 32)
	id := make([]byte, 8)
	if _, err := rand.Read(secret); err != nil {
		return metadata.SigningKey{}, fmt.Errorf("signing key: %w", err)
	}
	if _, err := rand.Read(id); err != nil {
		return metadata.SigningKey{}, fmt.Errorf("signing key: %w", err)
	}
	now := k.now()
	nk := metadata.SigningKey{ID: hex.EncodeToString(id), Secret: secret, Created: now}
	// Keys older than a rotation period plus a token lifetime verify nothing.
	if err := k.store.AddSigningKey(ctx, nk, now.Add(-k.rotateAfter), now.Add(-2*k.rotateAfter-k.tokenTTL)); err != nil {
		return metadata.SigningKey{}, err
	}
	if err := k.reload(ctx, true); err != nil {
		return metadata.SigningKey{}, err
	}
	keys = *k.keys.Load()
	if len(keys) == 0 {
		return metadata.SigningKey{}, errors.New("signing key: none stored")
	}
	return keys[0], nil
}

// Sign returns a signed token for c.
func (k *Keyring) Sign(ctx context.Context, c *Claims) (string, error) {
	key, err := k.signingKey(ctx)
	if err != nil {
		return "", err
	}
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	t.Header["kid"] = key.ID
	s, err := t.SignedString(key.Secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// verifyKey finds the secret of kid, if it may still verify tokens.
func (k *Keyring) verifyKey(ctx context.Context, kid string) ([]byte, error) {
	for attempt := 0; attempt < 2; attempt++ {
		keys := *k.keys.Load()
		for i, key := range keys {
			if key.ID != kid {
				continue
			}
			// A replaced key verifies until its successor is a token
			// lifetime old (every token it signed has expired by then).
			if i > 0 && k.now().After(keys[i-1].Created.Add(k.tokenTTL+time.Minute)) {
				return nil, errors.New("signing key retired")
			}
			return key.Secret, nil
		}
		if attempt == 0 {
			// Another replica may have rotated.
			if err := k.reload(ctx, false); err != nil {
				return nil, err
			}
		}
	}
	return nil, errors.New("unknown signing key")
}

// Verify parses and checks a token for audience aud (the registry).
func (k *Keyring) Verify(ctx context.Context, token, aud string) (*Claims, error) {
	c := &Claims{}
	_, err := jwt.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("no kid")
		}
		return k.verifyKey(ctx, kid)
	}, jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithAudience(aud), jwt.WithIssuer(Issuer),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithStrictDecoding(), jwt.WithTimeFunc(k.now), jwt.WithLeeway(30*time.Second))
	if err != nil {
		return nil, err
	}
	return c, nil
}
