package schemas

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// Suffix is the file name suffix of every schema: a schema's file name is
// its bare subject name followed by Suffix.
const Suffix = ".schema.json"

// BaseURL is the prefix of every schema's $id; the $id of a subject's
// schema is BaseURL + FileName(subject).
const BaseURL = "https://github.com/wxhub/wxhub/schemas/"

// ErrUnknownSubject is returned by Raw for a subject without a schema.
var ErrUnknownSubject = errors.New("schemas: no schema for subject")

//go:embed *.schema.json
var files embed.FS

// FS returns the embedded schema files, flat at the root of the file
// system, named "<subject>.schema.json".
func FS() fs.FS { return files }

// FileName returns the file name of subject's schema (whether or not it
// exists).
func FileName(subject string) string { return subject + Suffix }

// ID returns the $id of subject's schema (whether or not it exists).
func ID(subject string) string { return BaseURL + FileName(subject) }

// Names returns the bare subject names that have a schema, sorted.
func Names() []string {
	entries, err := fs.ReadDir(files, ".")
	if err != nil { // cannot happen with an embed.FS
		panic(fmt.Sprintf("schemas: reading embedded files: %v", err))
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), Suffix); ok && !e.IsDir() {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// Raw returns the schema document for a bare subject name such as
// "user.lookup". The caller may modify the returned slice. A subject
// without a schema yields an error matching ErrUnknownSubject.
func Raw(subject string) ([]byte, error) {
	if subject == "" || strings.ContainsAny(subject, "/\\") {
		return nil, fmt.Errorf("%w %q", ErrUnknownSubject, subject)
	}
	b, err := files.ReadFile(FileName(subject))
	if err != nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownSubject, subject)
	}
	return b, nil
}
