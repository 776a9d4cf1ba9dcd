package events_test

import (
	"errors"
	"fmt"

	"github.com/wxhub/wxhub/events"
)

func ExampleValidate() {
	job := []byte(`{"job_id":"order 42","appid":"wx0123456789abcdef","lang":"fr"}`)

	err := events.Validate(events.SubjectUserLookup, job)
	fmt.Println(errors.Is(err, events.ErrSchema))

	var ve *events.ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			fmt.Println(p)
		}
	}

	err = events.Validate(events.SubjectUserLookup, []byte(`{"job_id":`))
	fmt.Println(errors.Is(err, events.ErrNotJSON), err)
	// Output:
	// true
	// /job_id: must match ^[A-Za-z0-9._:-]{1,128}$
	// /lang: must be one of zh_CN, zh_TW, en
	// /openid: missing required property
	// true user.lookup: not JSON: unexpected end of input at offset 10
}

func ExampleDecodeUserLookup() {
	job, err := events.DecodeUserLookup([]byte(`{"job_id":"order-42","appid":"wx0123456789abcdef","openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s %s %s lang=%q\n", job.JobID, job.AppID, job.OpenID, job.Lang)

	// A bad job: decode fails, but its identity can still be read for the
	// failure result.
	bad := []byte(`{"job_id":"order-43","appid":"wx0123456789abcdef","open_id":"o"}`)
	if _, err := events.DecodeUserLookup(bad); err != nil {
		fmt.Println(err)
		jobID, appID := events.PeekJobIdentity(bad)
		fmt.Println(jobID, appID)
	}
	// Output:
	// order-42 wx0123456789abcdef oUpF8uMuAJO_M2pxb1Q9zNjWeS6o lang=""
	// user.lookup: /open_id: unknown property (not allowed); /openid: missing required property
	// order-43 wx0123456789abcdef
}
