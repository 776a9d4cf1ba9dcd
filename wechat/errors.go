package wechat

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// APIError is an error answer from WeChat: {"errcode":N,"errmsg":"..."}.
// Match it with errors.As; compare Code, never Msg (its text and rid suffix
// vary).
type APIError struct {
	Endpoint string // path, e.g. "/cgi-bin/user/info"
	Code     int
	Msg      string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("wechat %s: errcode %d: %s", e.Endpoint, e.Code, e.Msg)
}

// TransportError is a failed exchange that produced no WeChat errcode: a
// network error, a timeout, an HTTP status other than 200, or a body that
// is not the expected JSON. It is transient. Err never holds a URL.
type TransportError struct {
	Endpoint   string
	StatusCode int  // HTTP status when one was received, else 0
	Timeout    bool // the call timed out
	Err        error
}

func (e *TransportError) Error() string {
	switch {
	case e.Timeout:
		return fmt.Sprintf("wechat %s: timeout: %v", e.Endpoint, e.Err)
	case e.StatusCode != 0 && e.StatusCode != 200:
		return fmt.Sprintf("wechat %s: HTTP %d: %v", e.Endpoint, e.StatusCode, e.Err)
	default:
		return fmt.Sprintf("wechat %s: %v", e.Endpoint, e.Err)
	}
}

func (e *TransportError) Unwrap() error { return e.Err }

// Class groups WeChat errors by what the caller should do about them.
type Class int

// Error classes, following the error table of shared/wechat-api.md.
const (
	ClassNone      Class = iota // no error, or the caller cancelled
	ClassToken                  // 40001, 40014, 42001: get a newer token and retry
	ClassTransient              // -1, 45011, network, timeout, 5xx, non-JSON: retry with backoff
	ClassQuota                  // 45009: stop, do not loop
	ClassConfig                 // 40013, 40125, 40164: fix the configuration
	ClassPermanent              // bad input or user must re-authorize: never retry
	ClassBug                    // 41001, 40002, 43002, 47001: a bug in the caller
)

var classNames = [...]string{"none", "token", "transient", "quota", "config", "permanent", "bug"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// Errcodes of WeChat's error table.
const (
	CodeSystemError        = -1
	CodeInvalidCredential  = 40001
	CodeInvalidGrantType   = 40002
	CodeInvalidOpenID      = 40003
	CodeInvalidAppID       = 40013
	CodeInvalidAccessToken = 40014
	CodeInvalidCode        = 40029
	CodeInvalidRefresh     = 40030
	CodeInvalidOpenIDList  = 40032
	CodeInvalidAppSecret   = 40125
	CodeCodeBeenUsed       = 40163
	CodeIPNotWhitelisted   = 40164
	CodeAccessTokenMissing = 41001
	CodeAccessTokenExpired = 42001
	CodeRefreshExpired     = 42002
	CodeTokenException     = 42007
	CodeRequirePOST        = 43002
	CodeDailyQuota         = 45009
	CodeMinuteQuota        = 45011
	CodeDataFormat         = 47001
	CodeAPIUnauthorized    = 48001
	CodeUserUnauthorized   = 50001
)

// ClassOfCode returns the class of a WeChat errcode. Codes not in the table
// are permanent.
func ClassOfCode(code int) Class {
	switch code {
	case 0:
		return ClassNone
	case CodeInvalidCredential, CodeInvalidAccessToken, CodeAccessTokenExpired:
		return ClassToken
	case CodeSystemError, CodeMinuteQuota:
		return ClassTransient
	case CodeDailyQuota:
		return ClassQuota
	case CodeInvalidAppID, CodeInvalidAppSecret, CodeIPNotWhitelisted:
		return ClassConfig
	case CodeAccessTokenMissing, CodeInvalidGrantType, CodeRequirePOST, CodeDataFormat:
		return ClassBug
	default:
		return ClassPermanent
	}
}

// Classify returns the class of err: an *APIError by its errcode, a
// *TransportError or context.DeadlineExceeded as transient,
// context.Canceled as none (the caller gave up), anything else permanent.
func Classify(err error) Class {
	if err == nil {
		return ClassNone
	}
	var api *APIError
	if errors.As(err, &api) {
		return ClassOfCode(api.Code)
	}
	var te *TransportError
	if errors.As(err, &te) {
		if errors.Is(err, context.Canceled) {
			return ClassNone
		}
		return ClassTransient
	}
	switch {
	case errors.Is(err, context.Canceled):
		return ClassNone
	case errors.Is(err, context.DeadlineExceeded):
		return ClassTransient
	}
	return ClassPermanent
}

// ErrCode returns the errcode of the *APIError in err's chain, or 0.
func ErrCode(err error) int {
	var api *APIError
	if errors.As(err, &api) {
		return api.Code
	}
	return 0
}

// IsTokenInvalid reports whether WeChat rejected the access_token (40001,
// 40014, 42001): get a newer token and retry.
func IsTokenInvalid(err error) bool { return Classify(err) == ClassToken }

// IsTransient reports whether err is worth retrying with backoff.
func IsTransient(err error) bool { return Classify(err) == ClassTransient }

// Fingerprint returns the first 8 hex digits of the SHA-256 of s: enough to
// tell secrets or tokens apart in logs, useless to an attacker.
func Fingerprint(s string) string {
	if s == "" {
		return "(empty)"
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}
