package wechatsim

// DemoApp is the app SeedDemo creates.
type DemoApp struct {
	AppID, Secret string
	OpenIDs       []string // its followers; the first has a unionid
}

// Demo credentials: a simulator-only app, public by design.
const (
	DemoAppID  = "wxdemo0000000001"
	DemoSecret = "d3m0s3cr3t0000000000000000000001"
)

func intp(v int) *int { return &v }

// demoFollowers are realistic followers of the demo app.
var demoFollowers = []Follower{
	{
		OpenID: "oDemo6_bmjrPTlm6_2sgVt7hMZOA", UnionID: "o6_bmasdasdsad6_2sgVt7hMZOPfL",
		SubscribeTime: 1700000000, Language: "zh_CN", Remark: "VIP", TagIDList: []int{128, 2},
		SubscribeScene: "ADD_SCENE_QR_CODE", QRScene: 98765, QRSceneStr: "spring-promo",
		Nickname: "小明", HeadImgURL: "https://thirdwx.qlogo.cn/mmopen/g3MonUZtNHkdmzicIlibx6iaFqAc56vxLSUfpb6n5WKSYVY0ChQKkiaJSgQ1dZuTOgvLLrhJbERQQ4eMsv84eavHiaiceqxibJxCfHe/46",
		Privilege: []string{"PRIVILEGE1"},
	},
	{
		OpenID: "oDemo6_kQ8yL2xJvN4mPzR7tWcAB", SubscribeTime: 1710000000, Language: "zh_TW",
		SubscribeScene: "ADD_SCENE_SEARCH", Nickname: "阿華",
	},
	{
		OpenID: "oDemo6_Hn3sVb9uFq1eXw5kLyTgC", SubscribeTime: 1720000000, Language: "en",
		Remark: "wholesale", GroupID: 0, TagIDList: []int{7}, SubscribeScene: "ADD_SCENE_PROFILE_CARD",
		Nickname: "Lily",
	},
	{
		OpenID: "oDemo6_Zr2pMd8aKc6gJh0nBvQxD", Subscribe: intp(0), Nickname: "已取关用户",
	},
}

// DemoOAuthDomains are the demo app's registered OAuth domains.
var DemoOAuthDomains = []string{"127.0.0.1", "localhost"}

// SeedDemo registers the demo app (DemoAppID, DemoSecret) with four
// followers (one with a unionid, one unsubscribed), registers
// DemoOAuthDomains for web authorization and logs the first follower in
// for the authorize pages, and returns it. It is idempotent.
func (s *Sim) SeedDemo() DemoApp {
	s.AddApp(DemoAppID, DemoSecret)
	d := DemoApp{AppID: DemoAppID, Secret: DemoSecret}
	for _, f := range demoFollowers {
		if err := s.AddFollower(DemoAppID, f); err != nil {
			panic("wechatsim: demo follower: " + err.Error()) // unreachable: the app was just added
		}
		d.OpenIDs = append(d.OpenIDs, f.OpenID)
	}
	s.SetOAuthDomains(DemoAppID, DemoOAuthDomains...)
	if err := s.LogIn(DemoAppID, LoggedInUser{OpenID: d.OpenIDs[0]}); err != nil {
		panic("wechatsim: demo login: " + err.Error()) // unreachable: the app was just added
	}
	return d
}
