package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
)

// fakeARM is a recording stand-in for arca's management API, speaking
// the HTTP contract of the spec (ARM paths, api-version, 201 +
// Azure-AsyncOperation on PUT/PATCH, 202 + Location on DELETE, nextLink
// paging, {"error":{code,message}}). CLI tests assert on what it records.
type fakeARM struct {
	t     *testing.T
	token string
	mu    sync.Mutex
	reqs  []recordedReq
	docs  map[string]map[string]any // lower-cased resource path -> resource
	order []string
	// estimate and syncResult answer the POST endpoints; nil means 501.
	estimate   map[string]any
	syncResult map[string]any
}

type recordedReq struct {
	Method, Path, Query, Body string
}

func (r recordedReq) String() string { return r.Method + " " + r.Path + " " + r.Body }

const (
	fakeSub  = "00000000-1111-2222-3333-444444444444"
	fakeRG   = "arca"
	fakeReg  = "myregistry"
	fakeBase = "/subscriptions/" + fakeSub + "/resourceGroups/" + fakeRG + "/providers/Microsoft.ContainerRegistry/registries/" + fakeReg
)

func newFakeARM(t *testing.T) (*fakeARM, string) {
	f := &fakeARM{t: t, token: "test-admin-token", docs: map[string]map[string]any{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func (f *fakeARM) requests() []recordedReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedReq(nil), f.reqs...)
}

// writes are the recorded non-GET requests on resources.
func (f *fakeARM) writes() []recordedReq {
	var out []recordedReq
	for _, r := range f.requests() {
		if r.Method != http.MethodGet {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeARM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, recordedReq{r.Method, r.URL.Path, r.URL.RawQuery, string(body)})
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		armErr(w, 401, "AuthenticationFailed", "Authentication failed: missing or invalid bearer token.")
		return
	}
	switch {
	case r.URL.Path == "/arca/v1/info":
		writeJSONResp(w, 200, map[string]any{"subscriptionId": fakeSub, "resourceGroup": fakeRG, "defaultRegistry": fakeReg,
			"registries": []any{map[string]any{"name": fakeReg, "hosts": []string{"127.0.0.1:5000", "myregistry.example.com"}}}})
	case strings.Contains(r.URL.Path, "/operationStatuses/"):
		writeJSONResp(w, 200, map[string]any{"status": "Succeeded"})
	case strings.Contains(r.URL.Path, "/operationResults/"):
		w.WriteHeader(200)
	case r.URL.Query().Get("api-version") != apiVersion:
		armErr(w, 400, "InvalidApiVersionParameter", "The api-version '"+r.URL.Query().Get("api-version")+"' is invalid.")
	case !strings.HasPrefix(r.URL.Path, fakeBase+"/"):
		armErr(w, 404, "ResourceGroupNotFound", "Resource group or registry not found.")
	default:
		f.resource(w, r, strings.TrimPrefix(r.URL.Path, fakeBase+"/"), body)
	}
}

func (f *fakeARM) resource(w http.ResponseWriter, r *http.Request, rest string, body []byte) {
	parts := strings.Split(rest, "/")
	switch {
	case r.Method == http.MethodPost && rest == "checkCacheRuleArtifactSyncEstimate":
		f.post(w, f.estimate, "checkCacheRuleArtifactSyncEstimate")
	case r.Method == http.MethodPost && len(parts) == 3 && parts[2] == "sync":
		f.post(w, f.syncResult, "sync")
	case len(parts) == 1 && r.Method == http.MethodGet:
		f.list(w, r, parts[0])
	case len(parts) == 2:
		f.item(w, r, parts[0], parts[1], body)
	default:
		armErr(w, 404, "NotFound", "no route for "+r.Method+" "+r.URL.Path)
	}
}

func (f *fakeARM) post(w http.ResponseWriter, result map[string]any, what string) {
	if result == nil {
		armErr(w, 501, "NotImplemented", what+" is not implemented yet")
		return
	}
	writeJSONResp(w, 200, result)
}

func kindName(coll string) string {
	if coll == "credentialSets" {
		return "credential set"
	}
	return "cache rule"
}

func (f *fakeARM) item(w http.ResponseWriter, r *http.Request, coll, name string, body []byte) {
	key := strings.ToLower(coll + "/" + name)
	doc, exists := f.docs[key]
	switch r.Method {
	case http.MethodGet:
		if !exists {
			armErr(w, 404, "ResourceNotFound", fmt.Sprintf("The %s %s could not be found.", kindName(coll), name))
			return
		}
		writeJSONResp(w, 200, doc)
	case http.MethodPut, http.MethodPatch:
		var in map[string]any
		if err := json.Unmarshal(body, &in); err != nil {
			armErr(w, 400, "InvalidRequestContent", "The request content was invalid and could not be deserialized.")
			return
		}
		if r.Method == http.MethodPatch && !exists {
			armErr(w, 404, "ResourceNotFound", fmt.Sprintf("The %s %s could not be found.", kindName(coll), name))
			return
		}
		doc = f.store(coll, name, key, doc, in, r.Method == http.MethodPatch)
		w.Header().Set("Azure-AsyncOperation", "http://management.example"+r.URL.Path+"/operationStatuses/op-1?api-version="+apiVersion)
		w.Header().Set("Retry-After", "0")
		writeJSONResp(w, 201, doc)
	case http.MethodDelete:
		if !exists {
			w.WriteHeader(204)
			return
		}
		delete(f.docs, key)
		w.Header().Set("Retry-After", "0")
		w.Header().Set("Location", "/subscriptions/"+fakeSub+"/providers/Microsoft.ContainerRegistry/locations/local/operationResults/del-1?api-version="+apiVersion)
		w.WriteHeader(202)
	default:
		armErr(w, 405, "MethodNotAllowed", "method not allowed")
	}
}

// store applies a PUT (replace) or PATCH (merge of properties, identity
// replaced when sent) and fills the envelope and read-only fields.
func (f *fakeARM) store(coll, name, key string, old, in map[string]any, patch bool) map[string]any {
	doc := in
	if patch {
		doc = old
		props, _ := doc["properties"].(map[string]any)
		newProps, _ := in["properties"].(map[string]any)
		for k, v := range newProps {
			props[k] = v
		}
		if id, ok := in["identity"]; ok {
			doc["identity"] = id
		}
	}
	doc["id"] = fakeBase + "/" + coll + "/" + name
	doc["name"] = name
	doc["type"] = "Microsoft.ContainerRegistry/registries/" + coll
	props, _ := doc["properties"].(map[string]any)
	if props == nil {
		props = map[string]any{}
		doc["properties"] = props
	}
	props["provisioningState"] = "Succeeded"
	props["creationDate"] = "2026-01-01T00:00:00+00:00"
	if coll == "credentialSets" {
		// As the server: a user-assigned identity is shown as named, else
		// the set's system-assigned principal.
		if id, _ := doc["identity"].(map[string]any); id == nil || !strings.EqualFold(fmt.Sprint(id["type"]), "UserAssigned") {
			doc["identity"] = map[string]any{"type": "systemAssigned", "principalId": "5f6e7d8c-0000-4000-8000-" + fmt.Sprintf("%012d", len(name)), "tenantId": "t"}
		}
		if creds, ok := props["authCredentials"].([]any); ok {
			for _, c := range creds {
				c.(map[string]any)["credentialHealth"] = map[string]any{"status": "Healthy"}
			}
		}
	}
	if _, ok := f.docs[key]; !ok {
		f.order = append(f.order, key)
	}
	f.docs[key] = doc
	return doc
}

// list pages two items at a time, to exercise nextLink.
func (f *fakeARM) list(w http.ResponseWriter, r *http.Request, coll string) {
	var names []string
	for _, k := range f.order {
		if _, ok := f.docs[k]; ok && strings.HasPrefix(k, strings.ToLower(coll)+"/") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	start := 0
	fmt.Sscan(r.URL.Query().Get("skip"), &start)
	page := map[string]any{"value": []any{}}
	var vals []any
	for i := start; i < len(names) && i < start+2; i++ {
		vals = append(vals, f.docs[names[i]])
	}
	if vals != nil {
		page["value"] = vals
	}
	if start+2 < len(names) {
		page["nextLink"] = fmt.Sprintf("http://%s%s?api-version=%s&skip=%d", r.Host, r.URL.Path, apiVersion, start+2)
	}
	writeJSONResp(w, 200, page)
}

func armErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSONResp(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func writeJSONResp(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// cliResult is one in-process run of the arca command.
type cliResult struct {
	stdout, stderr string
	err            error
}

// runCLI runs arca in-process with args, stdin and environment vars.
func runCLI(t *testing.T, env map[string]string, stdin string, args ...string) cliResult {
	t.Helper()
	var out, errb bytes.Buffer
	e := Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	root := NewRootCmd(e)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return cliResult{stdout: out.String(), stderr: errb.String(), err: err}
}

// cliEnv points the CLI at the fake with its token and a private config dir.
func cliEnv(t *testing.T, url string) map[string]string {
	return map[string]string{"ARCA_ENDPOINT": url, "ARCA_TOKEN": "test-admin-token", "ARCA_CONFIG_DIR": t.TempDir()}
}
