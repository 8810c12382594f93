package server

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/keystore"
)

// openAPIDocument is what the tests read of openapi.json.
type openAPIDocument struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas map[string]struct {
			Required   []string                   `json:"required"`
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"schemas"`
	} `json:"components"`
}

type openAPIOperation struct {
	OperationID string                     `json:"operationId"`
	Responses   map[string]json.RawMessage `json:"responses"`
	Parameters  []json.RawMessage          `json:"parameters"`
}

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// servedDocument is the document as GET /v1/openapi.json serves it.
func servedDocument(t *testing.T, h http.Handler) (openAPIDocument, []byte) {
	t.Helper()
	rec := call(h, "GET", "/v1/openapi.json", "", nil)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/openapi.json: %d %v", rec.Code, rec.Header())
	}
	var doc openAPIDocument
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("the document is not JSON: %v", err)
	}
	return doc, rec.Body.Bytes()
}

// TestOpenAPIMatchesTheRoutes: the served document's operations are exactly
// the route table's, the real handler serves each of them (not the mux's
// 404 or this path's 405), and every other method on a documented path is
// answered 405 with an Allow of the documented methods. A route added or
// removed without the document, or the other way round, fails here.
func TestOpenAPIMatchesTheRoutes(t *testing.T) {
	t.Parallel()
	s := testServer(t, Config{Keys: newFakeKeys(), VerifyTokens: []string{serviceTok}})
	h := s.Handler()
	doc, _ := servedDocument(t, h)
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Errorf("openapi is %q, want 3.1.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	operationIDs := map[string]bool{}
	for path, item := range doc.Paths {
		for method, raw := range item {
			if !slices.Contains(httpMethods, strings.ToUpper(method)) {
				continue // a path item's parameters or summary
			}
			documented[strings.ToUpper(method)+" "+path] = true
			var op openAPIOperation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			if op.OperationID == "" || operationIDs[op.OperationID] || len(op.Responses) == 0 {
				t.Errorf("%s %s: operationId %q (unique, required) and responses %d", method, path, op.OperationID, len(op.Responses))
			}
			operationIDs[op.OperationID] = true
			wildcards := regexp.MustCompile(`\{(\w+)\}`).FindAllStringSubmatch(path, -1)
			if len(wildcards) != len(op.Parameters) {
				t.Errorf("%s %s: %d path parameters, %d documented", method, path, len(wildcards), len(op.Parameters))
			}
		}
	}
	routed := map[string]bool{}
	for _, rt := range s.apiRoutes() {
		routed[rt.method+" "+rt.path] = true
	}
	for op := range documented {
		if !routed[op] {
			t.Errorf("%s is documented but not routed", op)
		}
	}
	for op := range routed {
		if !documented[op] {
			t.Errorf("%s is routed but not documented", op)
		}
	}

	// The real handler, as served: each documented operation reaches its
	// handler (the fake service answers, or the handler refuses the
	// request's content), every other method is 405 with Allow.
	for path, item := range doc.Paths {
		concrete := strings.ReplaceAll(path, "{id}", "2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA")
		var allow []string
		for method := range item {
			if m := strings.ToUpper(method); slices.Contains(httpMethods, m) {
				allow = append(allow, m)
			}
		}
		for _, method := range httpMethods {
			rec := call(h, method, concrete, "", nil)
			var body errorBody
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if slices.Contains(allow, method) || (method == "HEAD" && slices.Contains(allow, "GET")) {
				if body.Code == "not_found" || rec.Code == http.StatusMethodNotAllowed {
					t.Errorf("%s %s is documented but answered %d %s", method, path, rec.Code, rec.Body)
				}
				continue
			}
			got := strings.Split(rec.Header().Get("Allow"), ", ")
			want := slices.Clone(allow)
			if slices.Contains(want, "GET") {
				want = append(want, "HEAD")
			}
			slices.Sort(got)
			slices.Sort(want)
			if rec.Code != http.StatusMethodNotAllowed || body.Code != "method_not_allowed" || !slices.Equal(got, want) {
				t.Errorf("%s %s is not documented but answered %d %s, Allow %v (want 405 method_not_allowed, Allow %v)", method, path, rec.Code, rec.Body, got, want)
			}
		}
	}
}

// TestOpenAPIDocumentIsWhole: every $ref points into the document, the
// Error schema's code enum is exactly the codes the server's code sends
// (every writeError call names its code as a literal, so none can hide),
// and the key schemas document every field the server writes.
func TestOpenAPIDocumentIsWhole(t *testing.T) {
	t.Parallel()
	h := testServer(t, Config{}).Handler()
	doc, raw := servedDocument(t, h)
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok && !resolves(tree, ref) {
				t.Errorf("$ref %q does not resolve", ref)
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(tree)

	var enum struct {
		Components struct {
			Schemas struct {
				Error struct {
					Properties struct {
						Code struct {
							Enum []string `json:"enum"`
						} `json:"code"`
					} `json:"properties"`
				} `json:"Error"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &enum); err != nil {
		t.Fatal(err)
	}
	documented := slices.Sorted(slices.Values(enum.Components.Schemas.Error.Properties.Code.Enum))
	sent := slices.Sorted(maps.Keys(codesSent(t)))
	if !slices.Equal(documented, sent) {
		t.Errorf("the Error schema's codes\n%v\nare not the codes the server sends\n%v", documented, sent)
	}

	// The key schemas against what encoding/json writes, every optional
	// field set.
	now := time.Now()
	info := keystore.Info{ID: "id", RotatedFrom: "old", ExpiresAt: &now, RevokedAt: &now, LastUsedAt: &now}
	for name, v := range map[string]any{
		"KeyInfo":      KeyInfo{Info: info},
		"VerifyResult": verifyAnswer{UserID: "u", KeyID: "k"},
		"Revealed":     Revealed{},
	} {
		fields := jsonKeys(t, v)
		schema := doc.Components.Schemas[name]
		for _, f := range fields {
			if _, ok := schema.Properties[f]; !ok {
				t.Errorf("%s: the server writes %q, the document does not have it", name, f)
			}
		}
		for _, f := range schema.Required {
			if !slices.Contains(fields, f) {
				t.Errorf("%s: the document requires %q, the server does not write it", name, f)
			}
		}
	}
	nk := jsonKeys(t, NewKey{KeyInfo: KeyInfo{Info: info}, OldKeyRevokedAt: &now})
	var newKey struct {
		AllOf []struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"allOf"`
	}
	var schemas struct {
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &schemas); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(schemas.Components.Schemas["NewKey"], &newKey); err != nil || len(newKey.AllOf) != 2 {
		t.Fatalf("NewKey is not allOf KeyInfo and its own fields: %v", err)
	}
	for _, f := range nk {
		_, own := newKey.AllOf[1].Properties[f]
		_, inherited := doc.Components.Schemas["KeyInfo"].Properties[f]
		if !own && !inherited {
			t.Errorf("NewKey: the server writes %q, the document does not have it", f)
		}
	}
	for _, f := range []string{"secret_hash", "salt", "hash"} {
		if slices.Contains(nk, f) {
			t.Errorf("a key's JSON has %q", f)
		}
	}
}

func resolves(tree any, ref string) bool {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	node := tree
	for _, part := range strings.Split(p, "/") {
		m, ok := node.(map[string]any)
		if !ok {
			return false
		}
		if node, ok = m[part]; !ok {
			return false
		}
	}
	return true
}

func jsonKeys(t *testing.T, v any) []string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(m))
}

// codesSent reads the package's code (not its tests) for the codes of
// writeError calls; a call whose code is not a string literal fails the
// test, since its codes could not be checked.
func codesSent(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]bool{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			c, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if id, ok := c.Fun.(*ast.Ident); !ok || id.Name != "writeError" || len(c.Args) != 4 {
				return true
			}
			lit, ok := c.Args[2].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s: writeError's code is not a string literal", fset.Position(c.Pos()))
				return true
			}
			code, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			codes[code] = true
			return true
		})
	}
	if len(codes) < 10 {
		t.Fatalf("found only %d codes: is the scan looking at the right files?", len(codes))
	}
	return codes
}

// TestMethodsAndPathsAnswerJSON: a method a path does not have is 405 in
// the one error shape with Allow; GET on reveal says that the app calls it
// and where to read how; an unknown path is a JSON 404.
func TestMethodsAndPathsAnswerJSON(t *testing.T) {
	t.Parallel()
	h := testServer(t, Config{}).Handler()
	rec := call(h, "GET", "/v1/keys/reveal", "", nil)
	if rec.Code != 405 || errCode(t, rec) != "method_not_allowed" || rec.Header().Get("Allow") != "POST" {
		t.Fatalf("GET reveal: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	for _, says := range []string{"POST /v1/keys/reveal", "access token", "README"} {
		if !strings.Contains(rec.Body.String(), says) {
			t.Errorf("GET reveal's message does not say %q: %s", says, rec.Body)
		}
	}
	for _, c := range []struct{ method, path, allow string }{
		{"DELETE", "/v1/keys/reveal", "POST"}, // not DELETE /v1/keys/{id}
		{"GET", "/v1/keys/verify", "POST"},
		{"PUT", "/v1/keys", "GET, POST, HEAD"},
		{"GET", "/v1/keys/2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA/rotate", "POST"},
		{"POST", "/v1/openapi.json", "GET, HEAD"},
	} {
		rec := call(h, c.method, c.path, "", nil)
		if rec.Code != 405 || errCode(t, rec) != "method_not_allowed" || rec.Header().Get("Allow") != c.allow ||
			rec.Header().Get("Content-Type") != "application/json" || !strings.Contains(rec.Body.String(), c.allow) {
			t.Errorf("%s %s: %d %v %s, want 405 with Allow %q", c.method, c.path, rec.Code, rec.Header(), rec.Body, c.allow)
		}
	}
	for _, path := range []string{"/v1/nope", "/v1/keys/", "/v1/keys/a/b", "/v1/keys/x/rotate/again"} {
		rec := call(h, "GET", path, "", nil)
		if rec.Code != 404 || errCode(t, rec) != "not_found" || !strings.Contains(rec.Body.String(), "/v1/openapi.json") {
			t.Errorf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
	}
}

// The route table's paths agree on CORS, since a path is answered as one.
func TestRoutesAgreeOnCORSPerPath(t *testing.T) {
	t.Parallel()
	s := testServer(t, Config{})
	cors := map[string]bool{}
	for _, rt := range s.apiRoutes() {
		if was, ok := cors[rt.path]; ok && was != rt.cors {
			t.Errorf("%s: its operations disagree on CORS", rt.path)
		}
		cors[rt.path] = rt.cors
		if reflect.ValueOf(rt.handle).IsNil() {
			t.Errorf("%s %s has no handler", rt.method, rt.path)
		}
	}
}
