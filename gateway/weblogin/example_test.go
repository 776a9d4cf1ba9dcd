package weblogin_test

import (
	"fmt"

	"github.com/wxhub/wxhub/gateway/weblogin"
)

// The job_id of a login is derived from its nonce: a reloaded or
// republished callback can never start a second exchange under another id.
func ExampleJobID() {
	fmt.Println(weblogin.JobID("N0NCE2Q7ZL4XJ5R6T3WAB2CDEF"))
	fmt.Println(weblogin.JobID("N0NCE2Q7ZL4XJ5R6T3WAB2CDEF") == weblogin.JobID("N0NCE2Q7ZL4XJ5R6T3WAB2CDEF"))
	// Output:
	// weblogin-e580ae4ea4b03828495a2195577d51f4
	// true
}
