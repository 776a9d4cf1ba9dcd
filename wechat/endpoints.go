package wechat

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Endpoint paths.
const (
	PathToken          = "/cgi-bin/token"
	PathStableToken    = "/cgi-bin/stable_token"
	PathUserInfo       = "/cgi-bin/user/info"
	PathUserInfoBatch  = "/cgi-bin/user/info/batchget"
	PathCallbackIP     = "/cgi-bin/getcallbackip"
	PathAPIDomainIP    = "/cgi-bin/get_api_domain_ip"
	PathOAuthToken     = "/sns/oauth2/access_token"
	PathOAuthRefresh   = "/sns/oauth2/refresh_token"
	PathSNSUserInfo    = "/sns/userinfo"
	PathSNSAuth        = "/sns/auth"
	grantClientCreds   = "client_credential"
	grantAuthCode      = "authorization_code"
	grantRefreshToken  = "refresh_token"
	defaultTokenExpiry = 7200
)

// AccessToken is a global access_token and its remaining lifetime.
type AccessToken struct {
	Token     string
	ExpiresIn time.Duration
}

// LogValue keeps the token itself out of logs.
func (t AccessToken) LogValue() slog.Value {
	return slog.GroupValue(slog.String("fingerprint", Fingerprint(t.Token)), slog.Duration("expires_in", t.ExpiresIn))
}

type tokenAnswer struct {
	status
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

func (a tokenAnswer) token(endpoint string) (AccessToken, error) {
	if a.AccessToken == "" {
		return AccessToken{}, &TransportError{Endpoint: endpoint, StatusCode: http.StatusOK, Err: errMissing("access_token")}
	}
	if a.ExpiresIn <= 0 {
		a.ExpiresIn = defaultTokenExpiry
	}
	return AccessToken{Token: a.AccessToken, ExpiresIn: time.Duration(a.ExpiresIn) * time.Second}, nil
}

type errMissing string

func (e errMissing) Error() string { return "answer has no " + string(e) }

// Token fetches a new global access_token (GET /cgi-bin/token). Every call
// makes WeChat retire the previous token 5 minutes later and counts
// against the 2000-a-day quota: call it from one place only.
func (c *Client) Token(ctx context.Context, appid, secret string) (AccessToken, error) {
	q := url.Values{"grant_type": {grantClientCreds}, "appid": {appid}, "secret": {secret}}
	var a tokenAnswer
	if err := c.call(ctx, http.MethodGet, PathToken, q.Encode(), nil, &a, secret); err != nil {
		return AccessToken{}, err
	}
	return a.token(PathToken)
}

// StableToken fetches the stable access_token (POST /cgi-bin/stable_token).
// With forceRefresh false WeChat returns the current token and its
// remaining lifetime while it is valid; with true it retires the previous
// token (at most 20 a day, 30 s apart).
func (c *Client) StableToken(ctx context.Context, appid, secret string, forceRefresh bool) (AccessToken, error) {
	body := struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}{grantClientCreds, appid, secret, forceRefresh}
	var a tokenAnswer
	if err := c.call(ctx, http.MethodPost, PathStableToken, "", body, &a, secret); err != nil {
		return AccessToken{}, err
	}
	return a.token(PathStableToken)
}

// UserInfo is a follower's profile as cgi-bin/user/info returns it today
// (no nickname, avatar, sex or region since late 2021). When Subscribe is 0
// only OpenID and maybe UnionID are set.
type UserInfo struct {
	Subscribe      int     `json:"subscribe"`
	OpenID         string  `json:"openid"`
	Language       string  `json:"language,omitempty"`
	SubscribeTime  int64   `json:"subscribe_time,omitempty"`
	UnionID        string  `json:"unionid,omitempty"`
	Remark         string  `json:"remark,omitempty"`
	GroupID        int     `json:"groupid,omitempty"`
	TagIDList      []int64 `json:"tagid_list,omitempty"`
	SubscribeScene string  `json:"subscribe_scene,omitempty"`
	QRScene        int64   `json:"qr_scene,omitempty"`
	QRSceneStr     string  `json:"qr_scene_str,omitempty"`
}

type userInfoAnswer struct {
	status
	UserInfo
}

// UserInfo fetches a follower's profile (GET /cgi-bin/user/info). lang is
// zh_CN, zh_TW or en; "" means zh_CN.
func (c *Client) UserInfo(ctx context.Context, accessToken, openid, lang string) (UserInfo, error) {
	if lang == "" {
		lang = "zh_CN"
	}
	// The query url.Values{...}.Encode() would give (keys sorted), built
	// without the map and the sort: one call per user.lookup job.
	q := "access_token=" + url.QueryEscape(accessToken) + "&lang=" + url.QueryEscape(lang) + "&openid=" + url.QueryEscape(openid)
	var a userInfoAnswer
	if err := c.call(ctx, http.MethodGet, PathUserInfo, q, nil, &a, accessToken); err != nil {
		return UserInfo{}, err
	}
	return a.UserInfo, nil
}

// UserRef names one user for BatchGetUserInfo.
type UserRef struct {
	OpenID string `json:"openid"`
	Lang   string `json:"lang,omitempty"`
}

// BatchGetUserInfo fetches up to 100 profiles in one call
// (POST /cgi-bin/user/info/batchget).
func (c *Client) BatchGetUserInfo(ctx context.Context, accessToken string, users []UserRef) ([]UserInfo, error) {
	body := struct {
		UserList []UserRef `json:"user_list"`
	}{users}
	var a struct {
		status
		UserInfoList []UserInfo `json:"user_info_list"`
	}
	q := url.Values{"access_token": {accessToken}}
	if err := c.call(ctx, http.MethodPost, PathUserInfoBatch, q.Encode(), body, &a, accessToken); err != nil {
		return nil, err
	}
	return a.UserInfoList, nil
}

// CallbackIP lists the addresses WeChat calls back from
// (GET /cgi-bin/getcallbackip). It is a cheap way to check a token.
func (c *Client) CallbackIP(ctx context.Context, accessToken string) ([]string, error) {
	return c.ipList(ctx, PathCallbackIP, accessToken)
}

// APIDomainIP lists the addresses api.weixin.qq.com answers from
// (GET /cgi-bin/get_api_domain_ip), e.g. for an egress firewall.
func (c *Client) APIDomainIP(ctx context.Context, accessToken string) ([]string, error) {
	return c.ipList(ctx, PathAPIDomainIP, accessToken)
}

// ipList calls an endpoint that answers {"ip_list":[...]}: addresses
// and CIDR blocks.
func (c *Client) ipList(ctx context.Context, path, accessToken string) ([]string, error) {
	var a struct {
		status
		IPList []string `json:"ip_list"`
	}
	q := url.Values{"access_token": {accessToken}}
	if err := c.call(ctx, http.MethodGet, path, q.Encode(), nil, &a, accessToken); err != nil {
		return nil, err
	}
	return a.IPList, nil
}

// OAuthToken is a user's web OAuth token set. AccessToken and RefreshToken
// are the user's credentials: keep them out of logs and events (LogValue
// redacts them).
type OAuthToken struct {
	AccessToken    string
	ExpiresIn      time.Duration
	RefreshToken   string
	OpenID         string
	Scope          string
	UnionID        string
	IsSnapshotUser int
}

// LogValue keeps the user's tokens out of logs.
func (t OAuthToken) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("openid", t.OpenID),
		slog.String("scope", t.Scope),
		slog.String("access_token_fp", Fingerprint(t.AccessToken)),
	)
}

type oauthAnswer struct {
	status
	AccessToken    string `json:"access_token"`
	ExpiresIn      int    `json:"expires_in"`
	RefreshToken   string `json:"refresh_token"`
	OpenID         string `json:"openid"`
	Scope          string `json:"scope"`
	UnionID        string `json:"unionid"`
	IsSnapshotUser int    `json:"is_snapshotuser"`
}

func (a oauthAnswer) token(endpoint string) (OAuthToken, error) {
	if a.AccessToken == "" || a.OpenID == "" {
		return OAuthToken{}, &TransportError{Endpoint: endpoint, StatusCode: http.StatusOK, Err: errMissing("access_token or openid")}
	}
	return OAuthToken{
		AccessToken:    a.AccessToken,
		ExpiresIn:      time.Duration(a.ExpiresIn) * time.Second,
		RefreshToken:   a.RefreshToken,
		OpenID:         a.OpenID,
		Scope:          a.Scope,
		UnionID:        a.UnionID,
		IsSnapshotUser: a.IsSnapshotUser,
	}, nil
}

// ExchangeCode trades an OAuth code for the user's tokens
// (GET /sns/oauth2/access_token). A code works once: it is used even when
// the call fails, so never retry it blindly (40163 "code been used").
func (c *Client) ExchangeCode(ctx context.Context, appid, secret, code string) (OAuthToken, error) {
	q := url.Values{"appid": {appid}, "secret": {secret}, "code": {code}, "grant_type": {grantAuthCode}}
	var a oauthAnswer
	if err := c.call(ctx, http.MethodGet, PathOAuthToken, q.Encode(), nil, &a, secret, code); err != nil {
		return OAuthToken{}, err
	}
	return a.token(PathOAuthToken)
}

// RefreshOAuthToken renews a user's access token with the refresh_token
// (GET /sns/oauth2/refresh_token).
func (c *Client) RefreshOAuthToken(ctx context.Context, appid, refreshToken string) (OAuthToken, error) {
	q := url.Values{"appid": {appid}, "grant_type": {grantRefreshToken}, "refresh_token": {refreshToken}}
	var a oauthAnswer
	if err := c.call(ctx, http.MethodGet, PathOAuthRefresh, q.Encode(), nil, &a, refreshToken); err != nil {
		return OAuthToken{}, err
	}
	return a.token(PathOAuthRefresh)
}

// SNSUserInfo is a user's profile from /sns/userinfo (snsapi_userinfo
// scope). Since 2021 Sex is 0 and the region fields are empty.
type SNSUserInfo struct {
	OpenID     string   `json:"openid"`
	Nickname   string   `json:"nickname"`
	Sex        int      `json:"sex"`
	Province   string   `json:"province"`
	City       string   `json:"city"`
	Country    string   `json:"country"`
	HeadImgURL string   `json:"headimgurl"`
	Privilege  []string `json:"privilege"`
	UnionID    string   `json:"unionid,omitempty"`
}

// SNSUserInfo fetches the profile of the user who authorized with scope
// snsapi_userinfo (GET /sns/userinfo); a snsapi_base token gets 48001.
func (c *Client) SNSUserInfo(ctx context.Context, userToken, openid, lang string) (SNSUserInfo, error) {
	if lang == "" {
		lang = "zh_CN"
	}
	q := url.Values{"access_token": {userToken}, "openid": {openid}, "lang": {lang}}
	var a struct {
		status
		SNSUserInfo
	}
	if err := c.call(ctx, http.MethodGet, PathSNSUserInfo, q.Encode(), nil, &a, userToken); err != nil {
		return SNSUserInfo{}, err
	}
	return a.SNSUserInfo, nil
}

// CheckSNSToken reports whether a user's access token is still valid for
// openid (GET /sns/auth): nil when it is, an *APIError otherwise.
func (c *Client) CheckSNSToken(ctx context.Context, userToken, openid string) error {
	q := url.Values{"access_token": {userToken}, "openid": {openid}}
	var a status
	return c.call(ctx, http.MethodGet, PathSNSAuth, q.Encode(), nil, &a, userToken)
}
