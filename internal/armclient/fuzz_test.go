package armclient

import (
	"strings"
	"testing"
)

// FuzzNewError: any error body becomes one line, never a panic.
func FuzzNewError(f *testing.F) {
	f.Add(404, `{"error":{"code":"ResourceNotFound","message":"The cache rule test-mi could not be found."},"status":"Failed"}`)
	f.Add(401, `{"code":"AuthenticationFailed","message":"no"}`)
	f.Add(502, "<html>\r\nbad gateway\n</html>")
	f.Add(500, `{"error":null}`)
	f.Add(400, `{"error":{"code":5}}`)
	f.Fuzz(func(t *testing.T, status int, body string) {
		msg := newError(status, []byte(body)).Error()
		if strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("multi-line error %q", msg)
		}
	})
}
