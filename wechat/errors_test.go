package wechat

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, ClassNone},
		{"system error", &APIError{Code: -1}, ClassTransient},
		{"40001", &APIError{Code: 40001}, ClassToken},
		{"40014", &APIError{Code: 40014}, ClassToken},
		{"42001", &APIError{Code: 42001}, ClassToken},
		{"41001 token missing is a bug", &APIError{Code: 41001}, ClassBug},
		{"40002", &APIError{Code: 40002}, ClassBug},
		{"43002", &APIError{Code: 43002}, ClassBug},
		{"47001", &APIError{Code: 47001}, ClassBug},
		{"40003", &APIError{Code: 40003}, ClassPermanent},
		{"40013", &APIError{Code: 40013}, ClassConfig},
		{"40125", &APIError{Code: 40125}, ClassConfig},
		{"40164", &APIError{Code: 40164}, ClassConfig},
		{"40029", &APIError{Code: 40029}, ClassPermanent},
		{"40163", &APIError{Code: 40163}, ClassPermanent},
		{"40030", &APIError{Code: 40030}, ClassPermanent},
		{"42002", &APIError{Code: 42002}, ClassPermanent},
		{"42007", &APIError{Code: 42007}, ClassPermanent},
		{"45009", &APIError{Code: 45009}, ClassQuota},
		{"45011", &APIError{Code: 45011}, ClassTransient},
		{"48001", &APIError{Code: 48001}, ClassPermanent},
		{"50001", &APIError{Code: 50001}, ClassPermanent},
		{"unknown code", &APIError{Code: 99999}, ClassPermanent},
		{"wrapped", fmt.Errorf("job: %w", &APIError{Code: 40001}), ClassToken},
		{"transport", &TransportError{StatusCode: 502, Err: errors.New("bad gateway")}, ClassTransient},
		{"deadline", context.DeadlineExceeded, ClassTransient},
		{"canceled", context.Canceled, ClassNone},
		{"transport canceled", &TransportError{Err: context.Canceled}, ClassNone},
		{"other", errors.New("boom"), ClassPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.err); got != tt.want {
				t.Fatalf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestErrCodeAndHelpers(t *testing.T) {
	err := fmt.Errorf("lookup: %w", &APIError{Endpoint: PathUserInfo, Code: 42001, Msg: "access_token expired rid: 1"})
	if ErrCode(err) != 42001 || !IsTokenInvalid(err) || IsTransient(err) {
		t.Fatalf("ErrCode=%d IsTokenInvalid=%v IsTransient=%v", ErrCode(err), IsTokenInvalid(err), IsTransient(err))
	}
	if ErrCode(errors.New("x")) != 0 {
		t.Fatal("ErrCode of a non-API error must be 0")
	}
}

func TestFingerprint(t *testing.T) {
	a, b := Fingerprint("secret-a"), Fingerprint("secret-b")
	if len(a) != 8 || a == b || a == "secret-a" {
		t.Fatalf("fingerprints %q %q", a, b)
	}
	if Fingerprint("") != "(empty)" {
		t.Fatal("empty fingerprint")
	}
}

// TestDecodeAnswerMatchesOnErrcode: the errcode decides, whatever form
// the errmsg takes (rid suffix, the older hint suffix, none).
func TestDecodeAnswerMatchesOnErrcode(t *testing.T) {
	tests := []struct {
		name, body string
		code       int
	}{
		{"rid suffix", `{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest rid: 617682e0-09059ac5-34a8e2ea"}`, 40001},
		{"older hint suffix", `{"errcode":40001,"errmsg":"invalid credential hint: [KJZfAa0644e575]"}`, 40001},
		{"no suffix", `{"errcode":42001,"errmsg":"access_token expired"}`, 42001},
		{"an errmsg WeChat may reword", `{"errcode":40014,"errmsg":"something else entirely"}`, 40014},
		{"acknowledgement", `{"errcode":0,"errmsg":"ok"}`, 0},
		{"token success without errcode", `{"access_token":"T","expires_in":7200}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := decodeAnswer(PathToken, 200, []byte(tt.body), &tokenAnswer{}, nil)
			if ErrCode(err) != tt.code || (tt.code == 0) != (err == nil) {
				t.Fatalf("err %v, want errcode %d", err, tt.code)
			}
		})
	}
}
