package keys

import (
	"errors"
	"strings"
	"testing"
)

func TestValidatePrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		prefix  string
		problem string // "" when valid
	}{
		{"sk", ""},
		{"acme_live", ""},
		{"a1", ""},
		{"a", ""},
		{"a_b_c", ""},
		{DefaultPrefix, ""},
		{strings.Repeat("a", 32), ""},
		{"", "it is empty"},
		{"Sk", "uppercase"},
		{"1sk", "starts with a digit"},
		{"_sk", `starts with "_"`},
		{"sk-", `other than a-z, 0-9 and "_"`},
		{"sk live", `other than a-z, 0-9 and "_"`},
		{"sk_", `ends with "_"`},
		{"a__b", `contains "__"`},
		{strings.Repeat("a", 33), "33 characters long, the limit is 32"},
		{"clé", "non-ASCII"},
		{"ｓｋ", "non-ASCII"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			t.Parallel()
			err := ValidatePrefix(tc.prefix)
			if tc.problem == "" {
				if err != nil {
					t.Fatalf("ValidatePrefix(%q) = %v, want nil", tc.prefix, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidatePrefix(%q) = nil, want an error saying %q", tc.prefix, tc.problem)
			}
			if !errors.Is(err, ErrPrefix) {
				t.Errorf("errors.Is(%v, ErrPrefix) = false", err)
			}
			msg := err.Error()
			for _, want := range []string{
				tc.problem,                          // what is wrong
				`key prefix "` + tc.prefix,          // which prefix
				`lowercase letters, digits and "_"`, // what is allowed
				`(e.g. "sk" or "acme_live")`,        // an example
			} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestValidatePrefixShortensLongPrefixInError(t *testing.T) {
	t.Parallel()
	err := ValidatePrefix(strings.Repeat("a", 1000))
	if err == nil {
		t.Fatal("ValidatePrefix accepted a 1000-character prefix")
	}
	if len(err.Error()) > 300 {
		t.Errorf("error is %d bytes long; the prefix was not shortened: %v", len(err.Error()), err)
	}
}
