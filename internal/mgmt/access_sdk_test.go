package mgmt

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/containerregistry/armcontainerregistry"

	"github.com/arcacache/arca/internal/auth"
)

func sdkFactory(t *testing.T, f *fixture) *armcontainerregistry.ClientFactory {
	t.Helper()
	factory, err := armcontainerregistry.NewClientFactory(testSub, staticToken(testToken), &arm.ClientOptions{
		ClientOptions: policy.ClientOptions{
			Cloud: cloud.Configuration{
				ActiveDirectoryAuthorityHost: "https://login.invalid/",
				Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
					cloud.ResourceManager: {Audience: "https://management.core.windows.net/", Endpoint: f.srv.URL},
				},
			},
			Transport: f.srv.Client(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return factory
}

// TestAzureSDKRegistryScopeMapToken drives registries, scope maps and
// tokens with the unmodified Azure SDK for Go.
func TestAzureSDKRegistryScopeMapToken(t *testing.T) {
	f := newFixtureWith(t, withTLS)
	factory := sdkFactory(t, f)
	ctx := context.Background()
	poll := &runtime.PollUntilDoneOptions{Frequency: 10 * time.Millisecond}
	regs := factory.NewRegistriesClient()

	got, err := regs.Get(ctx, testRG, "default", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := got.Properties
	if got.SKU == nil || got.SKU.Name == nil || *got.SKU.Name != armcontainerregistry.SKUNameStandard || p == nil ||
		p.LoginServer == nil || *p.LoginServer == "" || p.CreationDate == nil || *p.AdminUserEnabled ||
		*p.ProvisioningState != armcontainerregistry.ProvisioningStateSucceeded || *p.PublicNetworkAccess != armcontainerregistry.PublicNetworkAccessEnabled {
		t.Fatalf("registry: %+v %+v", got.SKU, p)
	}
	up, err := regs.BeginUpdate(ctx, testRG, "default", armcontainerregistry.RegistryUpdateParameters{
		SKU:        &armcontainerregistry.SKU{Name: to.Ptr(armcontainerregistry.SKUNamePremium)},
		Tags:       map[string]*string{"team": to.Ptr("a")},
		Properties: &armcontainerregistry.RegistryPropertiesUpdateParameters{AdminUserEnabled: to.Ptr(true)},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	upd, err := up.PollUntilDone(ctx, poll)
	if err != nil {
		t.Fatal(err)
	}
	if !*upd.Properties.AdminUserEnabled || *upd.SKU.Name != armcontainerregistry.SKUNamePremium || *upd.Tags["team"] != "a" {
		t.Fatalf("updated: %+v", upd)
	}
	creds, err := regs.ListCredentials(ctx, testRG, "default", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *creds.Username != "default" || len(creds.Passwords) != 2 || creds.Passwords[0].Value == nil || len(*creds.Passwords[0].Value) < 40 {
		t.Fatalf("first listCredentials must generate both passwords: %+v", creds)
	}
	again, err := regs.ListCredentials(ctx, testRG, "default", nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Passwords[0].Value != nil {
		t.Fatal("a stored password was shown again: only its hash is kept")
	}
	rc, err := regs.RegenerateCredential(ctx, testRG, "default", armcontainerregistry.RegenerateCredentialParameters{Name: to.Ptr(armcontainerregistry.PasswordNamePassword2)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Passwords[0].Value != nil || rc.Passwords[1].Value == nil {
		t.Fatalf("regenerate password2: %+v", rc.Passwords)
	}
	s, err := f.meta.GetRegistrySettings(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := auth.CheckPassword(s.AdminPasswords[1], *rc.Passwords[1].Value); !ok {
		t.Fatal("stored hash does not match the regenerated password")
	}

	name, err := regs.CheckNameAvailability(ctx, armcontainerregistry.RegistryNameCheckRequest{Name: to.Ptr("default"), Type: to.Ptr("Microsoft.ContainerRegistry/registries")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *name.NameAvailable || *name.Reason != "AlreadyExists" {
		t.Fatalf("checkNameAvailability: %+v", name)
	}
	n := 0
	for pager := regs.NewListPager(nil); pager.More(); {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Value)
	}
	if n != 2 {
		t.Fatalf("list by subscription: %d registries", n)
	}

	// Create, read back and delete a registry.
	cp, err := regs.BeginCreate(ctx, testRG, "sdkreg01", armcontainerregistry.Registry{Location: to.Ptr("local"),
		SKU:        &armcontainerregistry.SKU{Name: to.Ptr(armcontainerregistry.SKUNameBasic)},
		Properties: &armcontainerregistry.RegistryProperties{AdminUserEnabled: to.Ptr(true)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	created, err := cp.PollUntilDone(ctx, poll)
	if err != nil {
		t.Fatal(err)
	}
	if *created.Name != "sdkreg01" || *created.Properties.LoginServer != "sdkreg01.localhost" || !*created.Properties.AdminUserEnabled || *created.SKU.Tier != armcontainerregistry.SKUTierBasic {
		t.Fatalf("created: %+v %+v", created.SKU, created.Properties)
	}
	if got, err := regs.Get(ctx, testRG, "sdkreg01", nil); err != nil || *got.ID != *created.ID {
		t.Fatalf("read back: %v", err)
	}
	dp0, err := regs.BeginDelete(ctx, testRG, "sdkreg01", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dp0.PollUntilDone(ctx, poll); err != nil {
		t.Fatal(err)
	}
	if _, err := regs.Get(ctx, testRG, "sdkreg01", nil); err == nil {
		t.Fatal("deleted registry still readable")
	}

	sms := factory.NewScopeMapsClient()
	smp, err := sms.BeginCreate(ctx, testRG, "default", "team-reader", armcontainerregistry.ScopeMap{Properties: &armcontainerregistry.ScopeMapProperties{
		Description: to.Ptr("read team"), Actions: []*string{to.Ptr("repositories/team/*/content/read"), to.Ptr("repositories/team/*/metadata/read")}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := smp.PollUntilDone(ctx, poll)
	if err != nil {
		t.Fatal(err)
	}
	if len(sm.Properties.Actions) != 2 || *sm.Properties.Description != "read team" {
		t.Fatalf("scope map: %+v", sm.Properties)
	}
	if _, err := sms.BeginCreate(ctx, testRG, "default", "badmap1", armcontainerregistry.ScopeMap{Properties: &armcontainerregistry.ScopeMapProperties{
		Actions: []*string{to.Ptr("repositories/team*/content/read")}}}, nil); err == nil {
		t.Fatal("invalid wildcard accepted")
	}
	var maps []string
	for pager := sms.NewListPager(testRG, "default", nil); pager.More(); {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Value {
			maps = append(maps, *m.Name)
		}
	}
	if len(maps) != 4 || maps[0] != auth.ScopeMapAdmin || maps[3] != "team-reader" {
		t.Fatalf("scope maps: %v", maps)
	}

	tks := factory.NewTokensClient()
	tp, err := tks.BeginCreate(ctx, testRG, "default", "ci-reader", armcontainerregistry.Token{Properties: &armcontainerregistry.TokenProperties{
		ScopeMapID: sm.ID, Status: to.Ptr(armcontainerregistry.TokenStatusEnabled)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := tp.PollUntilDone(ctx, poll)
	if err != nil {
		t.Fatal(err)
	}
	if *tk.Properties.ScopeMapID != *sm.ID || *tk.Properties.Status != armcontainerregistry.TokenStatusEnabled {
		t.Fatalf("token: %+v", tk.Properties)
	}
	gp, err := regs.BeginGenerateCredentials(ctx, testRG, "default", armcontainerregistry.GenerateCredentialsParameters{
		TokenID: tk.ID, Name: to.Ptr(armcontainerregistry.TokenPasswordNamePassword1), Expiry: to.Ptr(time.Now().Add(48 * time.Hour))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gen, err := gp.PollUntilDone(ctx, poll)
	if err != nil {
		t.Fatal(err)
	}
	if *gen.Username != "ci-reader" || len(gen.Passwords) != 1 || gen.Passwords[0].Value == nil {
		t.Fatalf("generateCredentials: %+v", gen)
	}
	read, err := tks.Get(ctx, testRG, "default", "ci-reader", nil)
	if err != nil {
		t.Fatal(err)
	}
	pw := read.Properties.Credentials.Passwords
	if len(pw) != 1 || pw[0].Value != nil || pw[0].Expiry == nil || *pw[0].Name != armcontainerregistry.TokenPasswordNamePassword1 {
		t.Fatalf("token passwords read back: %+v", pw)
	}
	if _, err := sms.BeginDelete(ctx, testRG, "default", "team-reader", nil); err == nil {
		t.Fatal("deleting a scope map a token uses succeeded")
	}
	dp, err := tks.BeginDelete(ctx, testRG, "default", "ci-reader", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dp.PollUntilDone(ctx, poll); err != nil {
		t.Fatal(err)
	}
	if _, err := tks.Get(ctx, testRG, "default", "ci-reader", nil); err == nil {
		t.Fatal("deleted token still readable")
	}
}
