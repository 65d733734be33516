package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// applyFile is the declarative form of a registry's cache rules and
// credential sets (docs/cli.md documents it).
type applyFile struct {
	Registry       string         `yaml:"registry"`
	ResourceGroup  string         `yaml:"resourceGroup"`
	CredentialSets []applyCredSet `yaml:"credentialSets"`
	CacheRules     []applyRule    `yaml:"cacheRules"`
}

type applyCredSet struct {
	Name             string `yaml:"name"`
	LoginServer      string `yaml:"loginServer"`
	UsernameSecretID string `yaml:"usernameSecretId"`
	PasswordSecretID string `yaml:"passwordSecretId"`
	// Identity is the user-assigned identity that reads the secrets
	// ("" = the system-assigned one).
	Identity string `yaml:"identity"`
}

type applyTags struct {
	StartsWith string `yaml:"startsWith"`
	EndsWith   string `yaml:"endsWith"`
	Contains   string `yaml:"contains"`
	Equals     string `yaml:"equals"`
}

type applyRule struct {
	Name                 string     `yaml:"name"`
	SourceRepository     string     `yaml:"sourceRepository"`
	TargetRepository     string     `yaml:"targetRepository"`
	CredentialSet        string     `yaml:"credentialSet"`
	Identity             string     `yaml:"identity"`
	SyncMode             string     `yaml:"syncMode"`
	SyncReferrers        string     `yaml:"syncReferrers"`
	Tags                 *applyTags `yaml:"tags"`
	Platforms            []string   `yaml:"platforms"`
	IncludeArtifactTypes []string   `yaml:"includeArtifactTypes"`
	ExcludeArtifactTypes []string   `yaml:"excludeArtifactTypes"`
	IncludeImageTypes    []string   `yaml:"includeImageTypes"`
	ExcludeImageTypes    []string   `yaml:"excludeImageTypes"`
	RetentionDays        int        `yaml:"retentionDays"`
}

// maxApplyFile bounds the file we read (a file of rules is kilobytes;
// /dev/zero must not eat the machine's memory).
const maxApplyFile = 16 << 20

// readApplyFile reads path ("-" is stdin) strictly: unknown keys are
// errors with their line, so a typo never silently drops a setting.
func readApplyFile(path string, stdin io.Reader) (*applyFile, error) {
	in := stdin
	if path == "-" {
		if stdin == nil {
			return nil, errors.New("-f -: no standard input")
		}
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		defer f.Close()
		in = f
	}
	b, err := io.ReadAll(io.LimitReader(in, maxApplyFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > maxApplyFile {
		return nil, fmt.Errorf("%s: larger than %d MiB; an apply file holds rules and credential sets, not data", path, maxApplyFile>>20)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f applyFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return &f, nil
		}
		return nil, fmt.Errorf("%s: %s", path, oneLineErr(err))
	}
	return &f, nil
}

func oneLineErr(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// validate checks the file as the CLI checks flags, naming the entry.
func (f *applyFile) validate() error {
	seen := map[string]bool{}
	for i, cs := range f.CredentialSets {
		where := fmt.Sprintf("credentialSets[%d]", i)
		if cs.Name == "" || cs.LoginServer == "" || cs.UsernameSecretID == "" || cs.PasswordSecretID == "" {
			return fmt.Errorf("%s: name, loginServer, usernameSecretId and passwordSecretId are required", where)
		}
		if seen[strings.ToLower(cs.Name)] {
			return fmt.Errorf("%s: credential set %q is listed twice", where, cs.Name)
		}
		seen[strings.ToLower(cs.Name)] = true
		if err := checkSecretRef(where+".usernameSecretId", cs.UsernameSecretID); err != nil {
			return err
		}
		if err := checkSecretRef(where+".passwordSecretId", cs.PasswordSecretID); err != nil {
			return err
		}
		if _, err := userAssigned(cs.Identity); err != nil {
			return fmt.Errorf("%s.identity: %w", where, err)
		}
	}
	seen = map[string]bool{}
	for i := range f.CacheRules {
		r := &f.CacheRules[i]
		where := fmt.Sprintf("cacheRules[%d] (%s)", i, r.Name)
		if r.Name == "" || r.SourceRepository == "" || r.TargetRepository == "" {
			return fmt.Errorf("cacheRules[%d]: name, sourceRepository and targetRepository are required", i)
		}
		if seen[strings.ToLower(r.Name)] {
			return fmt.Errorf("%s: cache rule %q is listed twice", where, r.Name)
		}
		seen[strings.ToLower(r.Name)] = true
		if err := r.normalize(); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	return nil
}

func (r *applyRule) filters() filterFlags {
	f := filterFlags{platforms: r.Platforms, inclArtifact: r.IncludeArtifactTypes, exclArtifact: r.ExcludeArtifactTypes,
		inclImage: r.IncludeImageTypes, exclImage: r.ExcludeImageTypes}
	if r.Tags != nil {
		f.tags = tagFilter{StartsWith: r.Tags.StartsWith, EndsWith: r.Tags.EndsWith, Contains: r.Tags.Contains, Equals: r.Tags.Equals}
	}
	return f
}

// normalize canonicalises enums (defaults PassiveSync, Disabled) and
// applies the CLI's rules; in a file, filters without ActiveSync are an
// error rather than silently dropped.
func (r *applyRule) normalize() error {
	var err error
	if r.SyncMode == "" {
		r.SyncMode = passiveSync
	}
	if r.SyncMode, err = canonicalChoice("syncMode", r.SyncMode, activeSync, passiveSync); err != nil {
		return err
	}
	if r.SyncReferrers == "" {
		r.SyncReferrers = disabled
	}
	if r.SyncReferrers, err = canonicalChoice("syncReferrers", r.SyncReferrers, enabled, disabled); err != nil {
		return err
	}
	if r.SyncReferrers == enabled && r.SyncMode != activeSync {
		return errReferrersNeedActive
	}
	f := r.filters()
	if err := f.check(); err != nil {
		return err
	}
	if f.any() && r.SyncMode != activeSync {
		return errors.New("artifact sync filters (tags, platforms, artifact and image types) require syncMode: ActiveSync")
	}
	if err := checkSource(r.SourceRepository); err != nil {
		return err
	}
	_, err = userAssigned(r.Identity)
	return err
}

// body is the PUT body for the rule in registry registryID.
func (r *applyRule) body(registryID string) ruleBody {
	ident, _ := userAssigned(r.Identity) // checked by normalize
	return newRuleBody(registryID, ruleProps{
		SourceRepository: r.SourceRepository,
		TargetRepository: r.TargetRepository,
		SyncMode:         r.SyncMode,
		SyncReferrers:    r.SyncReferrers,
		RetentionDays:    r.RetentionDays,
	}, r.CredentialSet, ident, r.filters())
}
