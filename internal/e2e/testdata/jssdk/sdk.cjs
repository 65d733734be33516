// Drives arca's management API with the unmodified Azure SDK for
// JavaScript (@azure/arm-containerregistry): creates a registry, a scope
// map and a token, reads them back, and prints what it read as JSON.
const { ContainerRegistryManagementClient } = require("@azure/arm-containerregistry");

const env = (k) => {
  if (!process.env[k]) throw new Error(k + " is not set");
  return process.env[k];
};
const credential = {
  getToken: async () => ({ token: env("ARCA_TOKEN"), expiresOnTimestamp: Date.now() + 3600e3 }),
};
const rg = env("ARCA_RG");
const client = new ContainerRegistryManagementClient(credential, env("ARCA_SUB"), { endpoint: env("ARCA_ENDPOINT") });

(async () => {
  const def = await client.registries.get(rg, "default");
  const created = await client.registries.create(rg, "jsreg01", {
    location: "local", sku: { name: "Standard" }, adminUserEnabled: true,
  });
  const updated = await client.registries.update(rg, "jsreg01", { anonymousPullEnabled: true });
  const sm = await client.scopeMaps.create(rg, "jsreg01", "js-reader", {
    description: "read app", actions: ["repositories/app/content/read", "repositories/app/metadata/read"],
  });
  const tk = await client.tokens.create(rg, "jsreg01", "js-token", { scopeMapId: sm.id, status: "enabled" });
  const gen = await client.registries.generateCredentials(rg, "jsreg01", { tokenId: tk.id, name: "password1" });
  const tokenBack = await client.tokens.get(rg, "jsreg01", "js-token");
  const smBack = await client.scopeMaps.get(rg, "jsreg01", "js-reader");
  const maps = [];
  for await (const m of client.scopeMaps.list(rg, "jsreg01")) maps.push(m.name);
  const regs = [];
  for await (const r of client.registries.list()) regs.push(r.name);
  const creds = await client.registries.listCredentials(rg, "jsreg01");
  console.log(JSON.stringify({
    default: { sku: def.sku && def.sku.name, loginServer: def.loginServer, creationDate: def.creationDate, adminUserEnabled: def.adminUserEnabled },
    created: { name: created.name, loginServer: created.loginServer, sku: created.sku.name, provisioningState: created.provisioningState },
    updated: { anonymousPullEnabled: updated.anonymousPullEnabled, adminUserEnabled: updated.adminUserEnabled },
    scopeMap: { id: sm.id, actions: smBack.actions, description: smBack.description },
    token: { scopeMapId: tokenBack.scopeMapId, status: tokenBack.status, passwords: tokenBack.credentials.passwords.map((p) => p.name) },
    generated: { username: gen.username, password: gen.passwords[0].value },
    adminUser: creds.username, adminPasswords: creds.passwords.length,
    scopeMaps: maps, registries: regs,
  }));
})().catch((e) => { console.error(e); process.exit(1); });
