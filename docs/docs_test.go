package docs_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/worker"
)

// The names the code defines, read from package events' source: every
// exported string constant whose name starts with one of these kinds.
// A new subject, bucket, stream or header is found without touching this
// test, and must then be documented.
var nameKinds = []string{"Subject", "Bucket", "Stream", "Header", "Kind", "Reason"}

// eventsNames returns kind → constant name → value, parsed from ../events.
func eventsNames(t *testing.T) map[string]map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("../events/*.go")
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]ast.Expr{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) && n.IsExported() {
						consts[n.Name] = vs.Values[i]
					}
				}
			}
		}
	}
	var eval func(e ast.Expr) (string, bool)
	eval = func(e ast.Expr) (string, bool) {
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind != token.STRING {
				return "", false
			}
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		case *ast.Ident:
			if v, ok := consts[e.Name]; ok {
				return eval(v)
			}
		case *ast.BinaryExpr:
			if e.Op == token.ADD {
				a, ok1 := eval(e.X)
				b, ok2 := eval(e.Y)
				return a + b, ok1 && ok2
			}
		case *ast.ParenExpr:
			return eval(e.X)
		}
		return "", false
	}
	out := map[string]map[string]string{}
	for name, expr := range consts {
		for _, kind := range nameKinds {
			if !strings.HasPrefix(name, kind) {
				continue
			}
			v, ok := eval(expr)
			if !ok {
				t.Fatalf("events.%s: cannot evaluate its value in this test; make it a string literal or a sum of them", name)
			}
			if out[kind] == nil {
				out[kind] = map[string]string{}
			}
			out[kind][name] = v
		}
	}
	return out
}

// pages returns every Markdown page of docs/ by file name.
func pages(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = string(b)
	}
	if len(out) == 0 {
		t.Fatal("no pages in docs/")
	}
	return out
}

func TestSanityOfTheParser(t *testing.T) {
	names := eventsNames(t)
	if got := names["Subject"]["SubjectUserLookup"]; got != events.SubjectUserLookup {
		t.Fatalf("parsed SubjectUserLookup = %q, want %q", got, events.SubjectUserLookup)
	}
	if got := names["Bucket"]["BucketTokens"]; got != events.BucketTokens {
		t.Fatalf("parsed BucketTokens = %q, want %q", got, events.BucketTokens)
	}
}

// TestEveryNameInEventsIsDocumented: each subject, stream, bucket and
// header constant of package events, and each worker durable, appears in
// docs/ in backquotes.
func TestEveryNameInEventsIsDocumented(t *testing.T) {
	var all strings.Builder
	for _, p := range pages(t) {
		all.WriteString(p)
	}
	text := all.String()
	names := eventsNames(t)
	for _, kind := range nameKinds {
		for name, v := range names[kind] {
			if !strings.Contains(text, "`"+v) {
				t.Errorf("events.%s = %q is not named in docs/ (write it in backquotes, e.g. in contract.md)", name, v)
			}
		}
	}
	for _, bare := range events.NewSubjects("").Jobs() {
		if c := worker.ConsumerName(bare); !strings.Contains(text, "`"+c+"`") {
			t.Errorf("durable consumer %q is not named in docs/", c)
		}
	}
}

// Shapes of names in the pages. Buckets are wx_..., streams WX_...;
// subjects are dotted lower-case words whose first word is the first
// word of a subject wxhub defines (user., oauth., token., deadletter.,
// wxhub., ...), optionally under the wx. prefix, excluding file names.
var (
	bucketRE = regexp.MustCompile(`\bwx_[a-z0-9_]+\b`)
	streamRE = regexp.MustCompile(`\bWX_[A-Z0-9_]+\b`)
	fileExt  = []string{"md", "go", "json", "yaml", "yml", "service", "sh", "txt", "html", "creds", "conf"}
)

func subjectRE(roots []string) *regexp.Regexp {
	sort.Strings(roots)
	return regexp.MustCompile(`(?:^|[^A-Za-z0-9_./-])((?:wx\.)?(?:` + strings.Join(roots, "|") + `)(?:\.[a-z0-9_]+)+)`)
}

// TestEveryNameInDocsExists: each bucket, stream and subject named in
// docs/ and README.md is one package events defines (dead letters: the prefix followed
// by a job subject).
func TestEveryNameInDocsExists(t *testing.T) {
	names := eventsNames(t)
	known := func(kind string) map[string]bool {
		m := map[string]bool{}
		for _, v := range names[kind] {
			m[v] = true
		}
		return m
	}
	buckets, streams, subjects := known("Bucket"), known("Stream"), known("Subject")
	var prefixes, roots []string
	for v := range subjects {
		if strings.HasSuffix(v, ".") {
			prefixes = append(prefixes, v)
		}
		root, _, _ := strings.Cut(v, ".")
		if !slices.Contains(roots, regexp.QuoteMeta(root)) {
			roots = append(roots, regexp.QuoteMeta(root))
		}
	}
	// Values that look like subjects but are not: user.profile's source.
	notSubjects := map[string]bool{events.SourceUserInfo: true, events.SourceSNSUserInfo: true, events.SourceSNSOAuth2: true}
	subjRE := subjectRE(roots)
	isSubject := func(s string) bool {
		s = strings.TrimPrefix(s, "wx.")
		if subjects[s] || notSubjects[s] {
			return true
		}
		for _, p := range prefixes {
			if rest, ok := strings.CutPrefix(s, p); ok && subjects[rest] {
				return true
			}
		}
		return false
	}
	checked := pages(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	checked["../README.md"] = string(readme)
	for file, text := range checked {
		for _, b := range bucketRE.FindAllString(text, -1) {
			if !buckets[b] {
				t.Errorf("%s names bucket %q, which package events does not define", file, b)
			}
		}
		for _, s := range streamRE.FindAllString(text, -1) {
			if !streams[s] {
				t.Errorf("%s names stream %q, which package events does not define", file, s)
			}
		}
		for _, m := range subjRE.FindAllStringSubmatch(text, -1) {
			s := m[1]
			if i := strings.LastIndexByte(s, '.'); slices.Contains(fileExt, s[i+1:]) {
				continue
			}
			if !isSubject(s) {
				t.Errorf("%s names subject %q, which package events does not define", file, s)
			}
		}
	}
}

// TestDocsFindAMisnamedSubject: the checks above catch a typo.
func TestDocsFindAMisnamedSubject(t *testing.T) {
	re := subjectRE([]string{"user", "token"})
	m := re.FindAllStringSubmatch("publish `token.invalidate` and read `wx.user.profile.failed`, see user.lookup.schema.json", -1)
	var got []string
	for _, x := range m {
		got = append(got, x[1])
	}
	want := []string{"token.invalidate", "wx.user.profile.failed", "user.lookup.schema.json"}
	if !slices.Equal(got, want) {
		t.Fatalf("subjects found = %q, want %q", got, want)
	}
	if bucketRE.FindString("read `wx_tokenz`") != "wx_tokenz" || streamRE.FindString("`WX_RESULT`") != "WX_RESULT" {
		t.Fatal("bucket or stream pattern misses a misspelt name")
	}
}

var linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestLinksStayInTheRepository: README.md and every page of docs/ link
// only to files that exist inside the repository: never to ../shared,
// anywhere outside the clone, or a web page (users read them offline).
func TestLinksStayInTheRepository(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := []string{filepath.Join(root, "README.md")}
	for f := range pages(t) {
		files = append(files, filepath.Join(root, "docs", f))
	}
	for _, dir := range []string{"deploy", "schemas"} {
		if m, _ := filepath.Glob(filepath.Join(root, dir, "*.md")); m != nil {
			files = append(files, m...)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range linkRE.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				t.Errorf("%s links %q: the docs link only inside the repository", strings.TrimPrefix(f, root+"/"), m[1])
				continue
			}
			if strings.HasPrefix(target, "#") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			abs := filepath.Clean(filepath.Join(filepath.Dir(f), target))
			rel, err := filepath.Rel(root, abs)
			if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				t.Errorf("%s links %q, outside the repository", strings.TrimPrefix(f, root+"/"), m[1])
				continue
			}
			if _, err := os.Stat(abs); err != nil {
				t.Errorf("%s links %q, which does not exist", strings.TrimPrefix(f, root+"/"), m[1])
			}
		}
	}
}

var goBlockRE = regexp.MustCompile("(?s)```go\n(.*?)```")

// TestGoSnippetsAreCompiledExamples: every Go block in README.md and
// docs/ is cut verbatim from a program under docs/examples, which
// compiles and whose tests run it against a real `wxhub run`; so no
// snippet can rot.
func TestGoSnippetsAreCompiledExamples(t *testing.T) {
	var sources []string
	err := filepath.WalkDir("examples", func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sources = append(sources, string(b))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	checked := pages(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	checked["../README.md"] = string(readme)
	n := 0
	for file, text := range checked {
		for _, m := range goBlockRE.FindAllStringSubmatch(text, -1) {
			n++
			if !slices.ContainsFunc(sources, func(src string) bool { return strings.Contains(src, m[1]) }) {
				first, _, _ := strings.Cut(strings.TrimSpace(m[1]), "\n")
				t.Errorf("%s: the Go block starting %q is not cut verbatim from a program in docs/examples", file, first)
			}
		}
	}
	if n == 0 {
		t.Fatal("no Go blocks found: the pattern is broken")
	}
}
