package events

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// A wx_quota value is a QuotaRecord, or a bare count as older holders (and
// operators) wrote it; anything else is an error, never a zero count.
func TestParseQuotaRecord(t *testing.T) {
	at := time.Date(2025, 3, 10, 14, 0, 0, 0, time.UTC)
	full, _ := json.Marshal(QuotaRecord{Used: 1801, Recent: []string{"a", "b"}, ExhaustedAt: at, ExhaustedBy: "h1"})
	for _, tc := range []struct {
		name, in string
		want     QuotaRecord
		wantErr  bool
	}{
		{"bare count", "1799", QuotaRecord{Used: 1799}, false},
		{"bare count with newline", "12\n", QuotaRecord{Used: 12}, false},
		{"record", string(full), QuotaRecord{Used: 1801, Recent: []string{"a", "b"}, ExhaustedAt: at, ExhaustedBy: "h1"}, false},
		{"record, count only", `{"used":3}`, QuotaRecord{Used: 3}, false},
		{"negative count", "-1", QuotaRecord{}, true},
		{"negative record", `{"used":-2}`, QuotaRecord{}, true},
		{"empty", "", QuotaRecord{}, true},
		{"text", "many", QuotaRecord{}, true},
		{"broken JSON", `{"used":`, QuotaRecord{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseQuotaRecord([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseQuotaRecord(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseQuotaRecord(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestQuotaRecordCounted(t *testing.T) {
	r := QuotaRecord{Used: 2, Recent: []string{"x", "y"}}
	if !r.Counted("y") || r.Counted("z") || (QuotaRecord{}).Counted("") {
		t.Errorf("Counted wrong on %+v", r)
	}
}
