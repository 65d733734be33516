package server

import (
	"context"
	"fmt"

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
func (s *Server) management(ctx context.Context, res *secrets.Resolver, checker mgmt.CredentialChecker, onChange func(string)) (*mgmt.Handler, *mgmt.Registries, error) {
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
	tok, generated, err := mgmt.LoadAdminToken(s.opts.DataDir, o.AdminToken)
	if err != nil {
		return nil, nil, err
	}
	if generated != "" {
		if o.AdminTokenGenerated == nil {
			return nil, nil, fmt.Errorf("admin token generated but nobody to show it to")
		}
		o.AdminTokenGenerated(generated)
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
