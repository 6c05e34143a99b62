package resource

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestValidTypeName(t *testing.T) {
	for _, ok := range []string{"M", "MeshTimeout", "Dataplane2", "A" + strings.Repeat("b", 62)} {
		assert.True(t, ValidTypeName(ok), ok)
	}
	for _, bad := range []string{"", "meshTimeout", "1Mesh", "Mesh-Timeout", "Mesh Timeout", "Mesh_x", "Méshe", "A" + strings.Repeat("b", 63)} {
		assert.False(t, ValidTypeName(bad), bad)
	}
}
