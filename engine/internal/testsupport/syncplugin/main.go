// Command syncplugin is a plugin for the engine's sync tests. Its behaviour
// follows its file name, so one build serves both sides of a test:
//
//	kds-plugin-synctest         SyncPolicy (GlobalToZone), SyncStatus
//	                            (ZoneToGlobal), OldOnly (GlobalToZone); accepts
//	                            every spec
//	kds-plugin-synctest-strict  SyncPolicy, SyncStatus and FutureType
//	                            (GlobalToZone, unknown to the lenient build);
//	                            rejects specs with "reject": true
//	kds-plugin-synctest-many    the lenient build's types plus ManyTypes
//	                            ZoneToGlobal types Many000, Many001, …
//
// It reports version 1.0.0, or 2.0.0 when the directory it is in ends in
// "-v2" (the same plugin at another version).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kds-engine/kds-engine/sdk"
)

// ManyTypes is how many extra types the "-many" build registers.
const ManyTypes = 200

type spec struct {
	Reject bool   `json:"reject,omitempty"`
	Value  string `json:"value,omitempty" jsonschema:"maxLength=64"`
	Pad    string `json:"pad,omitempty"`
}

func main() {
	strict := strings.HasSuffix(filepath.Base(os.Args[0]), "-strict")
	many := strings.HasSuffix(filepath.Base(os.Args[0]), "-many")
	check := func(_ context.Context, _ sdk.Meta, s *spec) sdk.ErrorList {
		var errs sdk.ErrorList
		if strict && s.Reject {
			errs.Invalid(sdk.Field("spec").Child("reject"), true, "this zone refuses rejected specs")
		}
		return errs
	}
	def := func(name string, d sdk.Direction) sdk.Type {
		return sdk.Define(sdk.TypeSpec[spec]{Name: name, Direction: d, Scope: sdk.ScopeMesh, SchemaVersion: 1, Validate: check})
	}
	types := []sdk.Type{def("SyncPolicy", sdk.GlobalToZone), def("SyncStatus", sdk.ZoneToGlobal)}
	if strict {
		types = append(types, def("FutureType", sdk.GlobalToZone))
	} else {
		types = append(types, def("OldOnly", sdk.GlobalToZone))
	}
	if many {
		for i := range ManyTypes {
			types = append(types, def(fmt.Sprintf("Many%03d", i), sdk.ZoneToGlobal))
		}
	}
	version := "1.0.0"
	if strings.HasSuffix(filepath.Dir(os.Args[0]), "-v2") {
		version = "2.0.0"
	}
	sdk.Serve(sdk.Plugin{Name: "synctest", Version: version, Types: types})
}
