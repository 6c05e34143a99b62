package plugin

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
)

func validateSeeds() map[string]struct {
	resp []byte
	n    uint8
} {
	enc := func(invalid ...*pluginv1.ResourceErrors) []byte {
		b, err := proto.Marshal(&pluginv1.ValidateResponse{Invalid: invalid})
		if err != nil {
			panic(err)
		}
		return b
	}
	fe := func(field, msg string) *pluginv1.FieldError { return &pluginv1.FieldError{Field: field, Message: msg} }
	return map[string]struct {
		resp []byte
		n    uint8
	}{
		"all_valid":        {enc(), 3},
		"one_invalid":      {enc(&pluginv1.ResourceErrors{Index: 1, Errors: []*pluginv1.FieldError{fe("spec.port", "out of range")}}), 3},
		"index_equal_len":  {enc(&pluginv1.ResourceErrors{Index: 3}), 3},
		"index_max_uint32": {enc(&pluginv1.ResourceErrors{Index: 1<<32 - 1}), 3},
		"index_int32_wrap": {enc(&pluginv1.ResourceErrors{Index: 1 << 31}), 3},
		"duplicates": {enc(
			&pluginv1.ResourceErrors{Index: 0, Errors: []*pluginv1.FieldError{fe("a", "1")}},
			&pluginv1.ResourceErrors{Index: 2},
			&pluginv1.ResourceErrors{Index: 0, Errors: []*pluginv1.FieldError{fe("b", "2"), fe("", "")}}), 3},
		"empty_batch": {enc(&pluginv1.ResourceErrors{Index: 0}), 0},
		"garbage":     {[]byte{0x0a, 0x05, 0x08, 0xff, 0xff}, 2},
	}
}

// FuzzValidateResponse feeds arbitrary plugin answers for a batch of n
// resources through the host's conversion. It never panics; an answer that
// names a resource outside the batch is refused as a whole; otherwise every
// entry's errors land on exactly the resource it names, in order, and the
// validation error names those resources' keys.
func FuzzValidateResponse(f *testing.F) {
	for _, s := range validateSeeds() {
		f.Add(s.resp, s.n)
	}
	f.Fuzz(func(t *testing.T, data []byte, n uint8) {
		var resp pluginv1.ValidateResponse
		if proto.Unmarshal(data, &resp) != nil {
			return // gRPC refuses what does not decode
		}
		rs := make([]*resource.Resource, n)
		for i := range rs {
			rs[i] = &resource.Resource{Type: "T", Mesh: "m", Name: fmt.Sprintf("r-%d", i)}
		}
		got, err := fieldErrors("p", len(rs), &resp)

		want := map[int][]resource.FieldError{}
		outside := false
		for _, inv := range resp.GetInvalid() {
			if int64(inv.GetIndex()) >= int64(n) {
				outside = true
				break
			}
			idx := int(inv.GetIndex())
			if len(inv.GetErrors()) == 0 {
				want[idx] = append(want[idx], resource.FieldError{Message: "rejected by plugin p"})
			}
			for _, e := range inv.GetErrors() {
				want[idx] = append(want[idx], resource.FieldError{Field: e.GetField(), Message: e.GetMessage()})
			}
		}
		if outside {
			if err == nil {
				t.Fatalf("an answer naming a resource outside the batch of %d was accepted: %v", n, got)
			}
			return
		}
		if err != nil {
			t.Fatalf("answer refused: %v", err)
		}
		if len(got) != len(want) {
			t.Fatalf("errors for %d resources, want %d", len(got), len(want))
		}
		for idx, fes := range want {
			if fmt.Sprint(got[idx]) != fmt.Sprint(fes) {
				t.Fatalf("resource %d: %v, want %v", idx, got[idx], fes)
			}
		}
		verr := validationError(rs, got)
		if len(got) == 0 {
			if verr != nil {
				t.Fatalf("no invalid resources, error %v", verr)
			}
			return
		}
		var ve *resource.ValidationError
		if !errors.As(verr, &ve) {
			t.Fatalf("want a *resource.ValidationError, got %v", verr)
		}
		if len(ve.Invalid) != len(want) {
			t.Fatalf("%d invalid resources named, want %d", len(ve.Invalid), len(want))
		}
		last := -1
		for _, inv := range ve.Invalid {
			var idx int
			if _, err := fmt.Sscanf(inv.Key.Name, "r-%d", &idx); err != nil || rs[idx].Key() != inv.Key {
				t.Fatalf("invalid resource %v is not in the batch", inv.Key)
			}
			if idx <= last {
				t.Fatalf("invalid resources not in input order")
			}
			last = idx
			if fmt.Sprint(inv.Errors) != fmt.Sprint(want[idx]) {
				t.Fatalf("%v: errors %v, want %v", inv.Key, inv.Errors, want[idx])
			}
		}
	})
}

// FuzzParseLock feeds arbitrary lock files to the parser. It never panics;
// an accepted file yields only entries that name a kds-plugin-* binary
// without a path and hold a sha256, and writing them back out in
// sha256sum format parses to the same entries; a refused file's error
// names the file and a line.
func FuzzParseLock(f *testing.F) {
	sum := strings.Repeat("0a", sha256.Size)
	for _, s := range []string{
		"", "# c\n\n" + sum + "  kds-plugin-a\n", sum + " *kds-plugin-b\r\n", sum + "\tkds-plugin-c\n",
		sum + "  kds-plugin-a\n" + sum + "  kds-plugin-a\n", "zz  kds-plugin-a\n", sum + "\n", sum + "  x/kds-plugin-a\n",
		`\` + sum + "  kds-plugin-a\n", sum + "  kds-plugin-a.sha256\n", sum + "  kds-plugin-\n",
	} {
		f.Add(s)
	}
	const path = "/plugins/kds-plugins.lock"
	f.Fuzz(func(t *testing.T, content string) {
		lf, err := parseLock(path, []byte(content))
		if err != nil {
			if !strings.Contains(err.Error(), "plugins lock file "+path+", line ") {
				t.Fatalf("error names no file and line: %v", err)
			}
			return
		}
		var out strings.Builder
		for name, e := range lf.entries {
			if !strings.HasPrefix(name, FilePrefix) || name == FilePrefix || strings.Contains(name, "/") || strings.HasSuffix(name, ChecksumSuffix) {
				t.Fatalf("accepted entry %q", name)
			}
			if len(e.sum) != sha256.Size {
				t.Fatalf("entry %q has a %d-byte digest", name, len(e.sum))
			}
			fmt.Fprintf(&out, "%x  %s\n", e.sum, name)
		}
		again, err := parseLock(path, []byte(out.String()))
		if err != nil {
			t.Fatalf("entries written back do not parse: %v\n%s", err, out.String())
		}
		if len(again.entries) != len(lf.entries) {
			t.Fatalf("%d entries written back, %d read", len(lf.entries), len(again.entries))
		}
		for name, e := range lf.entries {
			if !bytes.Equal(again.entries[name].sum, e.sum) {
				t.Fatalf("entry %q changed on the way back", name)
			}
		}
	})
}
