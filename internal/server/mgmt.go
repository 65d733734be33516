package server

import (
	"context"
	"errors"
	"io/fs"
	"net"

	"github.com/arcacache/arca/internal/backup"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/mgmt"
	"github.com/arcacache/arca/internal/secrets"
)

// ManagementOptions configure the management plane (ARM-compatible API).
type ManagementOptions struct {
	SubscriptionID string
	ResourceGroup  string
	TenantID       string
	// ExternalURL is the base URL clients reach arca at (for LRO and paging
	// links); empty derives it from each request.
	ExternalURL string
	// Registries are more registries as NAME=host1,host2.
	Registries []string
	// AdminToken is the management API's bearer token; empty uses (or
	// generates) the one whose hash is in the data directory.
	AdminToken string
	// AdminTokenGenerated receives a newly generated admin token, the only
	// time it is available.
	AdminTokenGenerated func(token string)
	MaxCacheRules       int
	// OnRulesChange is called after a registry's rules or credential sets
	// changed through this server.
	OnRulesChange func(registry string)
}

// management builds the registries and the management API handler.
func (s *Server) management(ctx context.Context, res *secrets.Resolver, checker mgmt.CredentialChecker, sy mgmt.Syncer, onChange func(string)) (*mgmt.Handler, *mgmt.Registries, error) {
	o := s.opts.Management
	regs, err := mgmt.NewRegistries(s.opts.RegistryName, o.Registries)
	if err != nil {
		return nil, nil, err
	}
	recs := make([]metadata.RegistryRecord, 0)
	for _, r := range regs.List() {
		recs = append(recs, metadata.RegistryRecord{Name: r.Name, Hosts: r.Hosts})
	}
	if err := s.meta.SyncRegistries(ctx, recs); err != nil {
		return nil, nil, err
	}
	tok, err := s.adminToken(o)
	if err != nil {
		return nil, nil, err
	}
	bsrc, err := backup.NewStoreSource(s.opts.DataDir, s.blobs)
	if err != nil {
		return nil, nil, err
	}
	h, err := mgmt.New(mgmt.Options{
		SubscriptionID:    o.SubscriptionID,
		ResourceGroup:     o.ResourceGroup,
		TenantID:          o.TenantID,
		ExternalURL:       o.ExternalURL,
		Registries:        regs,
		Store:             s.meta,
		Token:             tok,
		Checker:           checker,
		RateLimits:        s.meta,
		Syncer:            sy,
		Backup:            bsrc,
		BackupTempDir:     s.opts.DataDir,
		ValidateSecretRef: secrets.Validate,
		MaxRules:          o.MaxCacheRules,
		OnChange: func(registry string) {
			onChange(registry)
			if o.OnRulesChange != nil {
				o.OnRulesChange(registry)
			}
		},
		Logger: s.log,
	})
	if err != nil {
		return nil, nil, err
	}
	return h, regs, nil
}

// adminToken returns the management API's token verifier: the configured
// token, the one generated at an earlier start, or a new one. A new one is
// stored and shown once the server listens (after the "arca listening" log
// line), so a start that fails, say on a taken port, leaves no token
// nobody has seen.
func (s *Server) adminToken(o ManagementOptions) (*mgmt.AdminToken, error) {
	if o.AdminToken != "" {
		return mgmt.NewAdminToken(o.AdminToken)
	}
	tok, err := mgmt.ReadAdminToken(s.opts.DataDir)
	if !errors.Is(err, fs.ErrNotExist) {
		return tok, err
	}
	if o.AdminTokenGenerated == nil {
		return nil, errors.New("no admin token configured (set ARCA_ADMIN_TOKEN) and none to show a generated one to")
	}
	token, tok, err := mgmt.GenerateAdminToken()
	if err != nil {
		return nil, err
	}
	ready := s.opts.Ready
	s.opts.Ready = func(addr net.Addr) {
		if err := mgmt.StoreAdminToken(s.opts.DataDir, tok); err != nil {
			s.log.Error("could not store the generated admin token: it works until this process stops; set ARCA_ADMIN_TOKEN", "err", err)
		}
		o.AdminTokenGenerated(token)
		if ready != nil {
			ready(addr)
		}
	}
	return tok, nil
}
