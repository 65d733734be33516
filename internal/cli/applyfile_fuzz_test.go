package cli

import (
	"strings"
	"testing"
)

// FuzzApplyFile: any file is parsed and validated or refused with an
// error, never a panic; a file that validates builds rule bodies.
func FuzzApplyFile(f *testing.F) {
	f.Add(applyYAML)
	f.Add("registry: r\ncacheRules:\n  - name: abcde\n    sourceRepository: ghcr.io/a\n    targetRepository: a\n    syncMode: ActiveSync\n    tags: {equals: \"1\"}\n")
	f.Add("credentialSets: [{name: x}]\n")
	f.Add("cacheRules: {}\n")
	f.Add(":\n- [")
	f.Fuzz(func(t *testing.T, doc string) {
		af, err := readApplyFile("-", strings.NewReader(doc))
		if err != nil {
			return
		}
		if af.validate() != nil {
			return
		}
		for i := range af.CacheRules {
			b := af.CacheRules[i].body("/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerRegistry/registries/r")
			if b.Properties.SourceRepository == "" {
				t.Fatal("validated rule without source")
			}
		}
	})
}
