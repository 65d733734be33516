package server

// testAdminToken is the admin token of in-process servers (strong enough
// to be accepted: 128 bits or more).
const testAdminToken = "server-test-admin-token-0123456789"
