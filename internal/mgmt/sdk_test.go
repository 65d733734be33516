package mgmt

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/containerregistry/armcontainerregistry"
)

// staticToken is an azcore.TokenCredential handing out the admin token.
type staticToken string

func (s staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(s), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// recorder is the SDK's transport: the test server's TLS client, noting
// every request.
type recorder struct {
	c    *http.Client
	mu   sync.Mutex
	reqs []string
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Method+" "+req.URL.String())
	r.mu.Unlock()
	return r.c.Do(req)
}

func (r *recorder) seen(pred func(string) bool) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.reqs {
		if pred(s) {
			out = append(out, s)
		}
	}
	return out
}

// TestAzureSDK drives arca with the official Azure SDK for Go
// (armcontainerregistry, unmodified), over HTTPS with a bearer token.
func TestAzureSDK(t *testing.T) {
	f := newFixtureWith(t, withTLS, func(o *Options) { o.PageSize = 2 })
	rec := &recorder{c: f.srv.Client()}
	factory, err := armcontainerregistry.NewClientFactory(testSub, staticToken(testToken), &arm.ClientOptions{
		ClientOptions: policy.ClientOptions{
			Cloud: cloud.Configuration{
				ActiveDirectoryAuthorityHost: "https://login.invalid/",
				Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
					cloud.ResourceManager: {Audience: "https://management.core.windows.net/", Endpoint: f.srv.URL},
				},
			},
			Transport: rec,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	poll := &runtime.PollUntilDoneOptions{Frequency: 10 * time.Millisecond}
	sets, crs := factory.NewCredentialSetsClient(), factory.NewCacheRulesClient()
	setID := func(name string) string { return base("default") + "/credentialSets/" + name }

	// Credential sets: create two.
	for _, name := range []string{"dockerhub", "dockerhub2"} {
		p, err := sets.BeginCreate(ctx, testRG, "default", name, armcontainerregistry.CredentialSet{
			Identity: &armcontainerregistry.IdentityProperties{Type: to.Ptr(armcontainerregistry.ResourceIdentityTypeSystemAssigned)},
			Properties: &armcontainerregistry.CredentialSetProperties{
				LoginServer: to.Ptr("docker.io"),
				AuthCredentials: []*armcontainerregistry.AuthCredential{{
					Name:                     to.Ptr(armcontainerregistry.CredentialNameCredential1),
					UsernameSecretIdentifier: to.Ptr("https://myvault.vault.azure.net/secrets/username"),
					PasswordSecretIdentifier: to.Ptr("https://myvault.vault.azure.net/secrets/password"),
				}},
			},
		}, nil)
		if err != nil {
			t.Fatalf("credential set BeginCreate: %v", err)
		}
		res, err := p.PollUntilDone(ctx, poll)
		if err != nil {
			t.Fatalf("credential set PollUntilDone: %v", err)
		}
		cs := res.CredentialSet
		if *cs.Name != name || *cs.Properties.ProvisioningState != armcontainerregistry.ProvisioningStateSucceeded ||
			cs.Identity == nil || cs.Identity.PrincipalID == nil || len(*cs.Identity.PrincipalID) != 36 ||
			cs.Properties.AuthCredentials[0].CredentialHealth == nil || cs.Properties.CreationDate == nil || *cs.ID != setID(name) {
			t.Fatalf("created credential set: %+v", cs)
		}
	}

	// Cache rules: create three; the first uses a credential set.
	for _, r := range []struct{ name, src, tgt, set string }{
		{"ubuntu", "docker.io/library/ubuntu", "ubuntu", "dockerhub"},
		{"mcrall", "mcr.microsoft.com/*", "*", ""},
		{"dotnet", "mcr.microsoft.com/dotnet/sdk", "dotnet/sdk", ""},
	} {
		props := &armcontainerregistry.CacheRuleProperties{SourceRepository: to.Ptr(r.src), TargetRepository: to.Ptr(r.tgt)}
		if r.set != "" {
			props.CredentialSetResourceID = to.Ptr(setID(r.set))
		}
		p, err := crs.BeginCreate(ctx, testRG, "default", r.name, armcontainerregistry.CacheRule{Properties: props}, nil)
		if err != nil {
			t.Fatalf("cache rule BeginCreate %s: %v", r.name, err)
		}
		res, err := p.PollUntilDone(ctx, poll)
		if err != nil {
			t.Fatalf("cache rule PollUntilDone %s: %v", r.name, err)
		}
		if *res.Name != r.name || *res.Properties.TargetRepository != r.tgt || *res.Properties.ProvisioningState != armcontainerregistry.ProvisioningStateSucceeded ||
			*res.Type != typeCacheRule || res.SystemData == nil || res.SystemData.CreatedAt == nil {
			t.Fatalf("created rule: %+v", res.CacheRule)
		}
	}

	got, err := crs.Get(ctx, testRG, "default", "ubuntu", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Properties.SourceRepository != "docker.io/library/ubuntu" || *got.Properties.CredentialSetResourceID != setID("dockerhub") {
		t.Fatalf("Get: %+v", got.Properties)
	}

	var listed []string
	pages := 0
	for pager := crs.NewListPager(testRG, "default", nil); pager.More(); pages++ {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Value {
			listed = append(listed, *r.Name)
		}
	}
	if strings.Join(listed, ",") != "dotnet,mcrall,ubuntu" || pages != 2 {
		t.Fatalf("NewListPager: %v in %d pages", listed, pages)
	}

	up, err := crs.BeginUpdate(ctx, testRG, "default", "ubuntu", armcontainerregistry.CacheRuleUpdateParameters{
		Properties: &armcontainerregistry.CacheRuleUpdateProperties{CredentialSetResourceID: to.Ptr(setID("dockerhub2"))},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	upd, err := up.PollUntilDone(ctx, poll)
	if err != nil {
		t.Fatal(err)
	}
	if *upd.Properties.CredentialSetResourceID != setID("dockerhub2") || *upd.Properties.ProvisioningState != armcontainerregistry.ProvisioningStateSucceeded {
		t.Fatalf("rule BeginUpdate: %+v", upd.Properties)
	}

	sup, err := sets.BeginUpdate(ctx, testRG, "default", "dockerhub", armcontainerregistry.CredentialSetUpdateParameters{
		Properties: &armcontainerregistry.CredentialSetUpdateProperties{AuthCredentials: []*armcontainerregistry.AuthCredential{{
			Name:                     to.Ptr(armcontainerregistry.CredentialNameCredential1),
			UsernameSecretIdentifier: to.Ptr("https://myvault.vault.azure.net/secrets/username"),
			PasswordSecretIdentifier: to.Ptr("https://myvault.vault.azure.net/secrets/newpassword"),
		}}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	supd, err := sup.PollUntilDone(ctx, poll)
	if err != nil {
		t.Fatal(err)
	}
	if *supd.Properties.AuthCredentials[0].PasswordSecretIdentifier != "https://myvault.vault.azure.net/secrets/newpassword" {
		t.Fatalf("credential set BeginUpdate: %+v", supd.Properties.AuthCredentials[0])
	}

	var setNames []string
	for pager := sets.NewListPager(testRG, "default", nil); pager.More(); {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page.Value {
			setNames = append(setNames, *s.Name)
		}
	}
	if strings.Join(setNames, ",") != "dockerhub,dockerhub2" {
		t.Fatalf("credential sets listed: %v", setNames)
	}

	// A set in use cannot be deleted: the SDK surfaces ARM's error.
	if _, err := sets.BeginDelete(ctx, testRG, "default", "dockerhub2", nil); !isARMError(err, http.StatusConflict, "CredentialSetInUse") {
		t.Fatalf("deleting a used set: %v", err)
	}
	// Validation errors reach the SDK as ARM errors too.
	_, err = crs.BeginCreate(ctx, testRG, "default", "nocreds", armcontainerregistry.CacheRule{Properties: &armcontainerregistry.CacheRuleProperties{
		SourceRepository: to.Ptr("docker.io/library/nginx"), TargetRepository: to.Ptr("nginx")}}, nil)
	if !isARMError(err, http.StatusBadRequest, "EnforceDockerAuthentication") {
		t.Fatalf("docker hub without credentials: %v", err)
	}

	for _, name := range []string{"ubuntu", "mcrall", "dotnet"} {
		p, err := crs.BeginDelete(ctx, testRG, "default", name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.PollUntilDone(ctx, poll); err != nil {
			t.Fatalf("rule delete poll: %v", err)
		}
	}
	if _, err := crs.Get(ctx, testRG, "default", "ubuntu", nil); !isARMError(err, http.StatusNotFound, "ResourceNotFound") {
		t.Fatalf("Get after delete: %v", err)
	}
	for _, name := range []string{"dockerhub", "dockerhub2"} {
		p, err := sets.BeginDelete(ctx, testRG, "default", name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.PollUntilDone(ctx, poll); err != nil {
			t.Fatalf("set delete poll: %v", err)
		}
	}
	// Deleting what is gone is a 204, which the SDK accepts.
	if p, err := sets.BeginDelete(ctx, testRG, "default", "dockerhub", nil); err != nil {
		t.Fatalf("second delete: %v", err)
	} else if _, err := p.PollUntilDone(ctx, poll); err != nil {
		t.Fatalf("second delete poll: %v", err)
	}

	// What the SDK sent: only 2023-07-01, and it polled both LRO styles.
	all := rec.seen(func(string) bool { return true })
	for _, s := range all {
		if !strings.Contains(s, "api-version=2023-07-01") {
			t.Errorf("request without api-version=2023-07-01: %s", s)
		}
	}
	statusPolls := rec.seen(func(s string) bool { return strings.HasPrefix(s, "GET ") && strings.Contains(s, "/operationStatuses/") })
	resultPolls := rec.seen(func(s string) bool { return strings.HasPrefix(s, "GET ") && strings.Contains(s, "/operationResults/") })
	// 2 set creates + 3 rule creates + 2 updates poll Azure-AsyncOperation; 5 deletes poll Location.
	if len(statusPolls) != 7 || len(resultPolls) != 5 {
		t.Fatalf("polls: %d Azure-AsyncOperation, %d Location; requests:\n%s", len(statusPolls), len(resultPolls), strings.Join(all, "\n"))
	}
	t.Logf("the SDK made %d requests, e.g. %s", len(all), statusPolls[0])
}

func isARMError(err error, status int, code string) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == status && re.ErrorCode == code
}
