package portal

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/syncer/artifactkind"
)

// sourceRegistries are the Source Registry dropdown: the upstreams ACR's
// artifact cache supports, then a custom login server.
var sourceRegistries = []struct{ Label, LoginServer string }{
	{"Docker Hub", "docker.io"},
	{"Microsoft Artifact Registry", "mcr.microsoft.com"},
	{"AWS Elastic Container Registry (ECR) Public Gallery", "public.ecr.aws"},
	{"GitHub Container Registry", "ghcr.io"},
	{"Quay", "quay.io"},
	{"registry.k8s.io", "registry.k8s.io"},
	{"Google Container Registry", "gcr.io"},
}

const customSource = "custom"

// ruleForm is the New cache rule form (and the edit form, where the
// name, source and destination are fixed).
type ruleForm struct {
	Edit              bool
	Name              string
	SourceRegistry    string // a login server of sourceRegistries or customSource
	CustomLoginServer string
	RepositoryPath    string
	Auth              bool
	AuthMode          string // "existing" or "new"
	CredentialSet     string
	NewCredName       string
	NewCredUsername   string
	NewCredPassword   string
	Target            string
	SyncMode          string
	Tags              string // a KQL query, or
	TagConditions     rules.SimpleTagFilter
	Platforms         string
	// ImageTypes and ArtifactTypes are comma-separated media types (artifact
	// types also take artifactkind's aliases), included or excluded by Mode.
	ImageTypes, ImageTypesMode       string
	ArtifactTypes, ArtifactTypesMode string
	Referrers                        bool
	Errors                           formErrors
	Estimate                         string
	// For the template:
	Sources         any
	CredentialSets  []credentialSet
	ArtifactAliases []string
}

func (f *ruleForm) parse(r *http.Request) {
	v := r.PostFormValue
	f.Name, f.SourceRegistry, f.CustomLoginServer = strings.TrimSpace(v("name")), v("sourceRegistry"), strings.TrimSpace(v("customLoginServer"))
	f.RepositoryPath, f.Target = strings.Trim(strings.TrimSpace(v("repositoryPath")), "/"), strings.TrimSpace(v("target"))
	f.Auth, f.AuthMode, f.CredentialSet = v("auth") == "on", v("authMode"), v("credentialSet")
	f.NewCredName, f.NewCredUsername, f.NewCredPassword = strings.TrimSpace(v("newCredName")), strings.TrimSpace(v("newCredUsername")), strings.TrimSpace(v("newCredPassword"))
	f.SyncMode, f.Tags, f.Platforms, f.Referrers = v("syncMode"), strings.TrimSpace(v("tags")), strings.TrimSpace(v("platforms")), v("referrers") == "on"
	f.TagConditions = rules.SimpleTagFilter{StartsWith: strings.TrimSpace(v("tagStartsWith")), EndsWith: strings.TrimSpace(v("tagEndsWith")),
		Contains: strings.TrimSpace(v("tagContains")), Equals: strings.TrimSpace(v("tagEquals"))}
	f.ImageTypes, f.ImageTypesMode = strings.TrimSpace(v("imageTypes")), v("imageTypesMode")
	f.ArtifactTypes, f.ArtifactTypesMode = strings.TrimSpace(v("artifactTypes")), v("artifactTypesMode")
}

// splitList splits a comma-separated field.
func splitList(s string) []string {
	var vals []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			vals = append(vals, x)
		}
	}
	return vals
}

// filters are the artifactSyncFilters the form sets (nil if none). The
// tag conditions become the CLI's KQL; the KQL field and the conditions
// together are refused in check.
func (f *ruleForm) filters() map[string]any {
	filters := map[string]any{}
	tags := f.Tags
	if !f.TagConditions.IsZero() {
		tags = f.TagConditions.Query()
	}
	if tags != "" {
		filters["tags"] = map[string]any{"type": "KQL", "query": tags}
	}
	if f.Platforms != "" {
		filters["platforms"] = map[string]any{"type": "array", "values": splitList(f.Platforms)}
	}
	for _, k := range []struct{ name, values, mode string }{{"imageTypes", f.ImageTypes, f.ImageTypesMode}, {"artifactTypes", f.ArtifactTypes, f.ArtifactTypesMode}} {
		if k.values != "" {
			filters[k.name] = map[string]any{"type": k.mode, "values": splitList(k.values)}
		}
	}
	if len(filters) == 0 {
		return nil
	}
	return filters
}

// tagCond is one tag condition field of the form.
type tagCond struct{ ID, Label, Value string }

func tagConds(f *ruleForm) []tagCond {
	t := f.TagConditions
	return []tagCond{{"tagStartsWith", "Tag starts with", t.StartsWith}, {"tagEndsWith", "Tag ends with", t.EndsWith},
		{"tagContains", "Tag contains", t.Contains}, {"tagEquals", "Tag equals", t.Equals}}
}

// check is what the form itself refuses: one way of giving the tag filter.
func (f *ruleForm) check() bool {
	if f.Tags != "" && !f.TagConditions.IsZero() {
		f.Errors["tags"] = "Give either the KQL query or the tag conditions, not both."
		return false
	}
	return true
}

func (f *ruleForm) loginServer() string {
	if f.SourceRegistry == customSource {
		return f.CustomLoginServer
	}
	return f.SourceRegistry
}

func (f *ruleForm) source() string {
	ls := f.loginServer()
	if ls == "" && f.RepositoryPath == "" {
		return ""
	}
	return ls + "/" + f.RepositoryPath
}

// properties is the cache rule body's properties the form sets.
func (f *ruleForm) properties(c *ctx) map[string]any {
	p := map[string]any{}
	if !f.Edit {
		p["sourceRepository"], p["targetRepository"] = f.source(), f.Target
	}
	cs := f.CredentialSet
	if f.AuthMode == "new" {
		cs = f.NewCredName
	}
	if f.Auth && cs != "" {
		p["credentialSetResourceId"] = c.api.base + "/credentialSets/" + cs
	} else {
		p["credentialSetResourceId"] = nil
	}
	mode := f.SyncMode
	if mode == "" {
		mode = "PassiveSync"
	}
	p["syncMode"] = mode
	// Filters and referrers are sent whatever the mode, so the API refuses
	// them on a PassiveSync rule with its own message (the page's script
	// disables the fields it hides, so only a page without it sends them).
	switch {
	case f.Referrers:
		p["syncReferrers"] = "Enabled"
	case mode == "ActiveSync":
		p["syncReferrers"] = "Disabled"
	case f.Edit:
		p["syncReferrers"] = nil
	}
	if fl := f.filters(); fl != nil {
		p["artifactSyncFilters"] = fl
	} else if f.Edit {
		p["artifactSyncFilters"] = nil
	}
	return p
}

// cache serves /portal/cache[/new | /{name}/{edit,delete,sync}].
func (h *Handler) cache(c *ctx, seg []string) {
	switch {
	case len(seg) == 0:
		h.cacheList(c)
	case len(seg) == 1 && seg[0] == "new":
		h.ruleForm(c, "")
	case len(seg) == 2 && seg[1] == "edit":
		h.ruleForm(c, seg[0])
	case len(seg) == 2 && seg[1] == "delete":
		h.confirmDelete(c, "cache rule", "cacheRules/"+url.PathEscape(seg[0]), seg[0], "/portal/cache")
	case len(seg) == 2 && seg[1] == "sync" && c.r.Method == http.MethodPost:
		h.syncNow(c, seg[0])
	default:
		http.NotFound(c.w, c.r)
	}
}

type ruleRow struct {
	cacheRule
	Hits, Requests float64
}

func (h *Handler) cacheList(c *ctx) {
	rs, err := list[cacheRule](c, c.api, "cacheRules")
	if err != nil {
		h.fail(c.w, c.r, err)
		return
	}
	// Hit ratio over the last day, from the statistics table.
	rows, err := h.opts.Stats.Series(c, c.reg, h.opts.Now().Add(-24*time.Hour))
	if err != nil {
		h.fail(c.w, c.r, err)
		return
	}
	byRule := map[string]*totals{}
	for _, row := range rows {
		if byRule[row.Rule] == nil {
			byRule[row.Rule] = &totals{}
		}
		byRule[row.Rule].add(row.Name, float64(row.Value))
	}
	out := make([]ruleRow, 0, len(rs))
	for _, r := range rs {
		row := ruleRow{cacheRule: r}
		if t := byRule[r.Name]; t != nil {
			row.Hits, row.Requests = t.Served(), t.Requests()
		}
		out = append(out, row)
	}
	h.render(c, http.StatusOK, "cache", page{Title: "Cache", Nav: "cache", Notice: c.r.URL.Query().Get("notice"), Data: out})
}

func (h *Handler) ruleForm(c *ctx, name string) {
	sets, err := list[credentialSet](c, c.api, "credentialSets")
	if err != nil {
		h.fail(c.w, c.r, err)
		return
	}
	f := &ruleForm{Edit: name != "", Errors: formErrors{}, Sources: sourceRegistries, CredentialSets: sets, AuthMode: "existing",
		ImageTypesMode: "include", ArtifactTypesMode: "include", ArtifactAliases: artifactkind.Names()}
	if f.Edit {
		var cur cacheRule
		if err := c.api.do(c, http.MethodGet, "cacheRules/"+url.PathEscape(name), nil, &cur); err != nil {
			h.fail(c.w, c.r, err)
			return
		}
		f.Name, f.Target = cur.Name, cur.Properties.TargetRepository
		f.SourceRegistry, f.RepositoryPath, _ = strings.Cut(cur.Properties.SourceRepository, "/")
		f.CredentialSet, f.Auth = cur.CredentialSet(), cur.CredentialSet() != ""
		f.SyncMode, f.Referrers = cur.Properties.SyncMode, cur.Properties.SyncReferrers == "Enabled"
		if fl := cur.Properties.ArtifactSyncFilters; fl != nil {
			if fl.Tags != nil {
				f.Tags = fl.Tags.Query
				// What the conditions made (the create form, the CLI's
				// --tag-* flags) is shown in them again.
				if tf, err := rules.ParseTagQuery(fl.Tags.Query); err == nil {
					if simple, ok := tf.Simple(); ok && !simple.IsZero() {
						f.Tags, f.TagConditions = "", simple
					}
				}
			}
			if fl.Platforms != nil {
				f.Platforms = strings.Join(fl.Platforms.Values, ", ")
			}
			if fl.ImageTypes != nil {
				f.ImageTypes, f.ImageTypesMode = strings.Join(fl.ImageTypes.Values, ", "), fl.ImageTypes.Type
			}
			if fl.ArtifactTypes != nil {
				f.ArtifactTypes, f.ArtifactTypesMode = strings.Join(fl.ArtifactTypes.Values, ", "), fl.ArtifactTypes.Type
			}
		}
	}
	f.fixSource()
	title := "New cache rule"
	if f.Edit {
		title = "Edit cache rule " + name
	}
	if c.r.Method == http.MethodGet {
		h.render(c, http.StatusOK, "rule", page{Title: title, Nav: "cache", Data: f})
		return
	}
	f.parse(c.r)
	if f.Edit {
		f.Name = name
	}
	f.fixSource()
	var status int
	if !f.check() {
		status = http.StatusBadRequest
	} else if c.r.PostFormValue("action") == "estimate" {
		status = h.estimate(c, f)
	} else {
		status = h.saveRule(c, f)
	}
	if status == http.StatusSeeOther {
		return
	}
	h.render(c, status, "rule", page{Title: title, Nav: "cache", Data: f})
}

// fixSource shows a source login server that is not one of the dropdown's
// as the custom one.
func (f *ruleForm) fixSource() {
	if f.SourceRegistry == "" || f.SourceRegistry == customSource {
		if f.SourceRegistry == "" && !f.Edit {
			f.SourceRegistry = "docker.io"
		}
		return
	}
	for _, s := range sourceRegistries {
		if s.LoginServer == f.SourceRegistry {
			return
		}
	}
	f.CustomLoginServer, f.SourceRegistry = f.SourceRegistry, customSource
}

// estimate runs the dry run (what ActiveSync would fetch) and shows it.
func (h *Handler) estimate(c *ctx, f *ruleForm) int {
	var out json.RawMessage
	body := map[string]any{"name": f.Name, "properties": f.properties(c)}
	if f.Edit {
		var cur cacheRule
		if err := c.api.do(c, http.MethodGet, "cacheRules/"+url.PathEscape(f.Name), nil, &cur); err == nil {
			body["properties"].(map[string]any)["sourceRepository"] = cur.Properties.SourceRepository
			body["properties"].(map[string]any)["targetRepository"] = cur.Properties.TargetRepository
		}
	}
	if err := c.api.do(c, http.MethodPost, "checkCacheRuleArtifactSyncEstimate", body, &out); err != nil {
		if !f.Errors.add(err, "") {
			h.fail(c.w, c.r, err)
			return http.StatusSeeOther
		}
		return http.StatusBadRequest
	}
	var pretty strings.Builder
	var v any
	_ = json.Unmarshal(out, &v)
	enc := json.NewEncoder(&pretty)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
	f.Estimate = pretty.String()
	return http.StatusOK
}

// saveRule creates the new credential set when the form asks for one,
// then creates (PUT) or updates (PATCH) the rule.
func (h *Handler) saveRule(c *ctx, f *ruleForm) int {
	if !checkName(f.Errors, "name", "cache rule", f.Name) {
		return http.StatusBadRequest
	}
	if f.Auth && f.AuthMode == "new" && !checkName(f.Errors, "newCred.name", "credential set", f.NewCredName) {
		return http.StatusBadRequest
	}
	if f.Auth && f.AuthMode == "new" {
		body := credentialSetBody(f.NewCredName, f.loginServer(), f.NewCredUsername, f.NewCredPassword)
		if err := c.api.do(c, http.MethodPut, "credentialSets/"+url.PathEscape(f.NewCredName), body, nil); err != nil {
			if !f.Errors.add(err, "newCred.") {
				h.fail(c.w, c.r, err)
				return http.StatusSeeOther
			}
			if _, ok := f.Errors["newCred."]; ok { // a name error: show it at the name field
				f.Errors["newCred.name"] = f.Errors["newCred."]
				delete(f.Errors, "newCred.")
			}
			return http.StatusBadRequest
		}
	}
	method, verb := http.MethodPut, "created"
	if f.Edit {
		method, verb = http.MethodPatch, "updated"
	}
	err := c.api.do(c, method, "cacheRules/"+url.PathEscape(f.Name), map[string]any{"properties": f.properties(c)}, nil)
	if err != nil {
		if !f.Errors.add(err, "") {
			h.fail(c.w, c.r, err)
			return http.StatusSeeOther
		}
		return http.StatusBadRequest
	}
	c.redirect("/portal/cache", "Cache rule "+f.Name+" "+verb+".")
	return http.StatusSeeOther
}

// syncNow syncs one tag of an ActiveSync rule now.
func (h *Handler) syncNow(c *ctx, name string) {
	tag := strings.TrimSpace(c.r.PostFormValue("tag"))
	err := c.api.do(c, http.MethodPost, "cacheRules/"+url.PathEscape(name)+"/sync", map[string]string{"tag": tag}, nil)
	var ae *armError
	switch {
	case err == nil:
		c.redirect("/portal/cache", "Synced "+name+":"+tag+".")
	case errors.As(err, &ae) && ae.Status < 500:
		c.redirect("/portal/cache", "Sync of "+name+":"+tag+" failed: ("+ae.Code+") "+ae.Message)
	default:
		h.fail(c.w, c.r, err)
	}
}

// confirmDelete asks before deleting a resource, and deletes on POST.
func (h *Handler) confirmDelete(c *ctx, noun, path, name, back string) {
	type confirm struct{ Noun, Name, Back string }
	if c.r.Method == http.MethodGet {
		h.render(c, http.StatusOK, "confirm", page{Title: "Delete " + noun + " " + name, Nav: strings.TrimPrefix(back, "/portal/"),
			Data: confirm{noun, name, back}})
		return
	}
	if err := c.api.do(c, http.MethodDelete, path, nil, nil); err != nil {
		var ae *armError
		if errors.As(err, &ae) && ae.Status < 500 {
			h.render(c, ae.Status, "confirm", page{Title: "Delete " + noun + " " + name, Nav: strings.TrimPrefix(back, "/portal/"),
				Error: "(" + ae.Code + ") " + ae.Message, Data: confirm{noun, name, back}})
			return
		}
		h.fail(c.w, c.r, err)
		return
	}
	c.redirect(back, strings.ToUpper(noun[:1])+noun[1:]+" "+name+" deleted.")
}
