package armclient

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Error is a non-2xx answer. Its text follows az: "(Code) Message".
type Error struct {
	StatusCode int
	Code       string
	Message    string
}

func (e *Error) Error() string {
	switch {
	case e.Code != "" && e.Message != "":
		return fmt.Sprintf("(%s) %s", e.Code, e.Message)
	case e.Code != "":
		return fmt.Sprintf("(%s) HTTP %d %s", e.Code, e.StatusCode, http.StatusText(e.StatusCode))
	case e.Message != "":
		return fmt.Sprintf("HTTP %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
	}
	return fmt.Sprintf("HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// maxPlainMessage is how much of a non-JSON error body we quote.
const maxPlainMessage = 200

// newError parses ARM's {"error":{"code","message"}} (also the bare
// {"code","message"} some services send); other bodies are quoted
// briefly, on one line.
func newError(status int, body []byte) *Error {
	e := &Error{StatusCode: status}
	var doc struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &doc) == nil {
		if doc.Error != nil {
			e.Code, e.Message = doc.Error.Code, doc.Error.Message
		} else {
			e.Code, e.Message = doc.Code, doc.Message
		}
		if e.Code != "" || e.Message != "" {
			e.Message = oneLine(e.Message)
			return e
		}
	}
	msg := oneLine(string(body))
	if len(msg) > maxPlainMessage {
		msg = msg[:maxPlainMessage] + "..."
	}
	e.Message = msg
	return e
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
