package wechatsim_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/wxhub/wxhub/wechat/wechatsim"
)

func ExampleSim() {
	clock := wechatsim.NewManualClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	sim := wechatsim.New(wechatsim.WithClock(clock))
	sim.AddApp("wx0123456789abcdef", "app-secret")
	srv := httptest.NewServer(sim)
	defer srv.Close()

	q := url.Values{"grant_type": {"client_credential"}, "appid": {"wx0123456789abcdef"}, "secret": {"app-secret"}}
	resp, err := http.Get(srv.URL + "/cgi-bin/token?" + q.Encode())
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		panic(err)
	}
	fmt.Println("expires_in:", tok.ExpiresIn)
	fmt.Println("current:", tok.AccessToken == sim.ValidToken("wx0123456789abcdef"))

	clock.Advance(2 * time.Hour) // the token expires
	fmt.Println("after 2h:", sim.ValidToken("wx0123456789abcdef") == "")
	fmt.Println("fetches:", sim.Stats().CallCount("/cgi-bin/token", "wx0123456789abcdef"))
	// Output:
	// expires_in: 7200
	// current: true
	// after 2h: true
	// fetches: 1
}
