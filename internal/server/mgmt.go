package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

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
func (s *Server) management(ctx context.Context, res *secrets.Resolver, checker mgmt.CredentialChecker, sy mgmt.Syncer, health func(string) mgmt.UpstreamHealth, idCheck mgmt.IdentityChecker, onChange func(string)) (*mgmt.Handler, *mgmt.Registries, error) {
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
	if err := s.addManagedRegistries(ctx, regs); err != nil {
		return nil, nil, err
	}
	principals, err := s.principals(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	// arca backup snapshots the embedded database; PostgreSQL has its
	// own tools (pg_dump, base backups), which see the whole store.
	var bsrc mgmt.BackupSource
	noBackup := ""
	if s.meta.Backend() == "sqlite" {
		if bsrc, err = backup.NewStoreSource(s.opts.DataDir, s.blobs); err != nil {
			return nil, nil, err
		}
	} else {
		noBackup = "The metadata is in " + s.meta.Backend() + ": back it up with its own tools (pg_dump); arca backup covers the embedded store only."
	}
	h, err := mgmt.New(mgmt.Options{
		SubscriptionID:  o.SubscriptionID,
		ResourceGroup:   o.ResourceGroup,
		TenantID:        o.TenantID,
		ExternalURL:     o.ExternalURL,
		Registries:      regs,
		Store:           s.meta,
		GC:              s.gc,
		Retention:       s.meta,
		Principals:      principals,
		Checker:         checker,
		RateLimits:      s.meta,
		UpstreamHealth:  health,
		Syncer:          sy,
		Access:          s.meta,
		Identities:      s.meta,
		IdentityChecker: idCheck,
		// s.access is built after the management plane (it needs its
		// principals) and before the server serves.
		OnAccessChange: func(registry string) {
			s.access.Invalidate(registry)
			s.life.quota.Invalidate(registry)
		},
		Lifecycle:         lifecycleAPI{s},
		Backup:            bsrc,
		NoBackup:          noBackup,
		BackupTempDir:     s.opts.DataDir,
		ValidateSecretRef: secrets.Validate,
		KeyVault:          res,
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

// principals returns the management identities with the admin token in
// place: the configured one (at least 128 bits of entropy), the one kept
// in the metadata store, or a new one. A new one is stored and shown once
// the server listens (after the "arca listening" log line), so a start
// that fails, say on a taken port, leaves no token nobody has seen.
func (s *Server) principals(ctx context.Context, o ManagementOptions) (*mgmt.Principals, error) {
	p, err := mgmt.NewPrincipals(s.meta, nil)
	if err != nil {
		return nil, err
	}
	if o.AdminToken != "" {
		if err := p.SetAdminToken(ctx, o.AdminToken); err != nil {
			return nil, fmt.Errorf("refusing to start: %w", err)
		}
		return p, nil
	}
	token, store, err := p.EnsureAdmin(ctx, s.opts.DataDir)
	if err != nil || token == "" {
		return p, err
	}
	if o.AdminTokenGenerated == nil {
		return nil, errors.New("no admin token configured (set ARCA_ADMIN_TOKEN) and none to show a generated one to")
	}
	ready := s.opts.Ready
	s.opts.Ready = func(addr net.Addr) {
		if err := store(); err != nil {
			s.log.Error("could not store the generated admin token: it does not work; set ARCA_ADMIN_TOKEN", "err", err)
		} else {
			o.AdminTokenGenerated(token)
		}
		if ready != nil {
			ready(addr)
		}
	}
	return p, nil
}

// addManagedRegistries adds the registries created through the API. A
// name or host the startup flags configure stays theirs.
func (s *Server) addManagedRegistries(ctx context.Context, regs *mgmt.Registries) error {
	managed, err := s.meta.ManagedRegistries(ctx)
	if err != nil {
		return err
	}
	for _, r := range managed {
		if err := regs.Add(mgmt.Registry{Name: r.Name, Hosts: r.Hosts}); err != nil {
			s.log.Warn("registry created through the API not served as stored: startup flags win", "registry", r.Name, "err", err)
			if errors.Is(err, mgmt.ErrRegistryHostUsed) {
				_ = regs.Add(mgmt.Registry{Name: r.Name})
			}
		}
	}
	return nil
}

// registrySyncInterval is how soon a replica serves registries another
// replica created or deleted through the API.
const registrySyncInterval = 4 * time.Second

// syncRegistries follows the registries the metadata store has, until ctx
// ends.
func (s *Server) syncRegistries(ctx context.Context) {
	t := time.NewTicker(registrySyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		managed, err := s.meta.ManagedRegistries(ctx)
		if err != nil {
			s.log.Warn("reading registries", "err", err)
			continue
		}
		regs := make([]mgmt.Registry, len(managed))
		for i, r := range managed {
			regs[i] = mgmt.Registry{Name: r.Name, Hosts: r.Hosts}
		}
		for _, name := range s.regs.SyncManaged(regs) {
			s.log.Info("registry changed by another replica", "registry", name)
			s.access.Invalidate(name)
			s.onRegistryChange(name)
		}
	}
}
