package handlers_test

import (
	"fmt"

	"github.com/wxhub/wxhub/handlers"
)

// The wx_oauth key of a code never contains the code itself.
func ExampleOAuthKey() {
	fmt.Println(handlers.OAuthKey("wx0123456789abcdef", "0a1b2c")[:16])
	// Output: 517688bf5e1ef741
}
