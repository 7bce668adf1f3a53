package main

// The pods of one handler, made the way kubelet makes them: a sandbox whose config carries
// the pod's metadata and a linux security context (pod network and IPC namespaces, a PID
// namespace per container), then one container in it. containerd's CRI plugin puts every
// container of a pod on the sandbox's shim (it passes the sandbox id as the grouping key),
// so each pod is one shim process for either handler.

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// pod is one running pod: its sandbox and its single container.
type pod struct {
	name      string
	sandboxID string
	container string // container id; "" until created
}

// callTimeout bounds each CRI call of the setup and teardown; a pod start on a loaded
// 2-core machine takes well under this.
const callTimeout = 2 * time.Minute

func namespaceOptions() *cri.NamespaceOption {
	return &cri.NamespaceOption{
		Network: cri.NamespaceMode_POD,
		Pid:     cri.NamespaceMode_CONTAINER,
		Ipc:     cri.NamespaceMode_POD,
	}
}

// sandboxConfig is the config kubelet would send for pod `name` (no cgroup parent: the
// bed removes the containers' cgroups by their ids, which a kubepods tree would escape).
func sandboxConfig(name, uid, logDir string) *cri.PodSandboxConfig {
	return &cri.PodSandboxConfig{
		Metadata: &cri.PodSandboxMetadata{
			Name: name, Uid: uid, Namespace: "execprobe", Attempt: 0,
		},
		Hostname:     name,
		LogDirectory: logDir,
		Labels: map[string]string{
			"io.kubernetes.pod.name":      name,
			"io.kubernetes.pod.namespace": "execprobe",
			"io.kubernetes.pod.uid":       uid,
		},
		Annotations: map[string]string{"kubernetes.io/config.source": "execprobe"},
		Linux: &cri.LinuxPodSandboxConfig{
			SecurityContext: &cri.LinuxSandboxSecurityContext{
				NamespaceOptions: namespaceOptions(),
			},
		},
	}
}

func containerConfig(image string) *cri.ContainerConfig {
	return &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: "app", Attempt: 0},
		Image:    &cri.ImageSpec{Image: image},
		// busybox sleep as PID 1 ignores SIGTERM: teardown stops it with timeout 0 (SIGKILL)
		Command: []string{"sleep", "2147483647"},
		LogPath: "app/0.log",
		Labels:  map[string]string{"io.kubernetes.container.name": "app"},
		Linux: &cri.LinuxContainerConfig{
			Resources: &cri.LinuxContainerResources{CpuShares: 2, OomScoreAdj: 1000},
			SecurityContext: &cri.LinuxContainerSecurityContext{
				NamespaceOptions: namespaceOptions(),
			},
		},
	}
}

// pullImage makes sure `image` is present (the bed's registry serves it).
func pullImage(rt *criClient, image string) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := rt.image.PullImage(ctx, &cri.PullImageRequest{Image: &cri.ImageSpec{Image: image}})
	if err != nil {
		return fmt.Errorf("pull %s: %w", image, err)
	}
	return nil
}

// startPod runs one pod on `handler` and starts its container. On error the returned
// pod holds what was made, for stopPod.
func startPod(rt *criClient, handler, name, image, logRoot string) (*pod, error) {
	p := &pod{name: name}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	uid := fmt.Sprintf("execprobe-%s-uid", name)
	logDir := filepath.Join(logRoot, name)
	cfg := sandboxConfig(name, uid, logDir)
	sb, err := rt.runtime.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler})
	if err != nil {
		return p, fmt.Errorf("RunPodSandbox %s: %w", name, err)
	}
	p.sandboxID = sb.PodSandboxId
	c, err := rt.runtime.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: p.sandboxID, Config: containerConfig(image), SandboxConfig: cfg,
	})
	if err != nil {
		return p, fmt.Errorf("CreateContainer in %s: %w", name, err)
	}
	p.container = c.ContainerId
	if _, err := rt.runtime.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: p.container}); err != nil {
		return p, fmt.Errorf("StartContainer in %s: %w", name, err)
	}
	return p, nil
}

// stopPod stops and removes what startPod made; it tries every step and returns the
// first error.
func stopPod(rt *criClient, p *pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	if p.container != "" {
		_, err := rt.runtime.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: p.container, Timeout: 0})
		note(err)
		_, err = rt.runtime.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: p.container})
		note(err)
	}
	if p.sandboxID != "" {
		_, err := rt.runtime.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.sandboxID})
		note(err)
		_, err = rt.runtime.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.sandboxID})
		note(err)
	}
	return first
}

// forEach runs fn on items 0..n-1 with at most `parallel` at once and returns the errors.
func forEach(n, parallel int, fn func(i int) error) []error {
	sem := make(chan struct{}, parallel)
	var mu sync.Mutex // guards errs: the workers append to it
	var errs []error
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	return errs
}

// startPods starts n pods on `handler`, `parallel` at a time. The returned slice holds
// every pod that got at least a sandbox, also on error (for stopPods).
func startPods(rt *criClient, handler string, n, parallel int, image, logRoot string) ([]*pod, error) {
	pods := make([]*pod, n)
	errs := forEach(n, parallel, func(i int) error {
		p, err := startPod(rt, handler, fmt.Sprintf("%s-%03d", handler, i), image, logRoot)
		pods[i] = p
		return err
	})
	var made []*pod
	for _, p := range pods {
		if p != nil && p.sandboxID != "" {
			made = append(made, p)
		}
	}
	if len(errs) > 0 {
		return made, fmt.Errorf("%d of %d pods failed to start, first: %w", len(errs), n, errs[0])
	}
	return made, nil
}

// stopPods stops and removes every pod, `parallel` at a time, and then every pod
// sandbox the runtime still lists (so a pod whose start failed half-way goes too).
func stopPods(rt *criClient, pods []*pod, parallel int) error {
	errs := forEach(len(pods), parallel, func(i int) error { return stopPod(rt, pods[i]) })
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	left, err := rt.runtime.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
	if err != nil {
		errs = append(errs, fmt.Errorf("ListPodSandbox: %w", err))
	} else if len(left.Items) > 0 {
		rest := make([]*pod, len(left.Items))
		for i, s := range left.Items {
			rest[i] = &pod{name: s.Metadata.GetName(), sandboxID: s.Id}
		}
		errs = append(errs, forEach(len(rest), parallel, func(i int) error { return stopPod(rt, rest[i]) })...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d teardown errors, first: %w", len(errs), errs[0])
	}
	return nil
}
