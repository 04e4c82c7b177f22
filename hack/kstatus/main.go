// kstatus-check prints what sigs.k8s.io/cli-utils/pkg/kstatus/status, the library Flux
// and kpt use, computes for each object of a Kubernetes List read on stdin (the output of
// `kubectl get ... -o json`): one JSON line per object with its name, status and message.
// Built and cached by hack/tools.sh kstatus; used by tests/e2e/test_gitops.py.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading stdin:", err)
		os.Exit(2)
	}
	var list unstructured.UnstructuredList
	if err := list.UnmarshalJSON(raw); err != nil {
		fmt.Fprintln(os.Stderr, "not a Kubernetes List:", err)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	for i := range list.Items {
		obj := &list.Items[i]
		res, err := status.Compute(obj)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", obj.GetName(), err)
			os.Exit(1)
		}
		if err := out.Encode(result{obj.GetName(), res.Status.String(), res.Message}); err != nil {
			os.Exit(2)
		}
	}
}
