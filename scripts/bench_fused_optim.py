"""The fused step's two per-run loops, timed against their broadcast alternatives on one CPU thread (issue 24).

AdamW: torch's fused kernel (`_fused_adamw_`) once per run on its slices (what spotrun's fused step does, with
each run's lr and weight decay as kernel arguments: `train.fused_step = "per_run"`) against one broadcast update
over the stacked `[R, ...]` tensors with per-run lr and weight-decay tensors (≈ 8 element-wise ops per parameter)
and against spotrun's batched form (`"batched"`): the kernel once over the stacked tensors on a zeroed scratch with
lr 1 and no decay, then `p *= 1 - lr*wd; p += lr * scratch` with `[R]` tensors (both a launch count that does not
grow with R). Losses: one
`cross_entropy` per run against one over all runs' items, then a mean per run. Shapes: the grid of
BENCHMARKS.md (MLP 64-256-256-10, batch 128). Prints the best time of 5 rounds and whether the results are bitwise
equal. Usage: "$SPOTRUN_PYTHON" scripts/bench_fused_optim.py
"""
import torch, time
torch.set_num_threads(1)
shapes=[(64,256),(256,),(256,256),(256,),(256,10),(10,)]
def make(R):
    ps=[torch.randn(R,*s) for s in shapes]; gs=[torch.randn_like(p) for p in ps]
    ms=[torch.zeros_like(p) for p in ps]; vs=[torch.zeros_like(p) for p in ps]
    return ps,gs,ms,vs
def per_run(R, ps,gs,ms,vs, step, lrs, wds):
    step.add_(1)
    for r in range(R):
        torch._fused_adamw_([p[r] for p in ps],[g[r] for g in gs],[m[r] for m in ms],[v[r] for v in vs],[],[step[r]]*len(ps),
            lr=lrs[r], beta1=0.9, beta2=0.999, weight_decay=wds[r], eps=1e-8, amsgrad=False, maximize=False)
def bcast(R, ps,gs,ms,vs, step, lr_t, wd_t, b1=0.9, b2=0.999, eps=1e-8):
    step.add_(1)
    bc1 = 1 - b1**step; bc2s = (1 - b2**step).sqrt(); ss = lr_t / bc1; decay = 1 - lr_t*wd_t
    for p,g,m,v in zip(ps,gs,ms,vs):
        sh=(R,)+(1,)*(p.dim()-1)
        p.mul_(decay.view(sh)); m.lerp_(g,1-b1); v.mul_(b2).addcmul_(g,g,value=1-b2)
        den = (v.sqrt() / bc2s.view(sh)).add_(eps)
        p.addcdiv_(m, den, value=-1) if False else p.sub_(ss.view(sh)*m/den)
def scratch_form(R, ps,gs,ms,vs, step, lr_t, wd_t, sc):
    step.add_(1)
    for s in sc: s.zero_()
    torch._fused_adamw_(sc,gs,ms,vs,[],[step[0]]*len(ps), lr=1.0, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
    keep = 1 - lr_t*wd_t
    for p,s in zip(ps,sc):
        sh=(R,)+(1,)*(p.dim()-1)
        p.mul_(keep.view(sh)); p.addcmul_(s, lr_t.view(sh))
def bench(f, reps=200):
    best=1e9
    for _ in range(5):
        t=time.perf_counter()
        for _ in range(reps//5): f()
        best=min(best,(time.perf_counter()-t)/(reps//5))
    return best*1e3
for R in [1,4,16]:
    a=make(R); step=torch.zeros(R); lrs=[1e-3*(i+1) for i in range(R)]; wds=[0.01]*R
    t1=bench(lambda: per_run(R,*a,step,lrs,wds))
    b=make(R); st=torch.zeros(R); lr_t=torch.tensor(lrs); wd_t=torch.tensor(wds)
    t2=bench(lambda: bcast(R,*b,st,lr_t,wd_t))
    c=make(R); sc=[torch.zeros_like(p) for p in c[0]]; st3=torch.zeros(R)
    t3=bench(lambda: scratch_form(R,*c,st3,lr_t,wd_t,sc))
    # agreement after a few steps on same data
    a=make(R); b=[[t.clone() for t in l] for l in a]; s1=torch.zeros(R); s2=torch.zeros(R)
    c=[[t.clone() for t in l] for l in a]; s3=torch.zeros(R)
    for _ in range(5): per_run(R,*a,s1,lrs,wds); bcast(R,*b,s2,lr_t,wd_t); scratch_form(R,*c,s3,lr_t,wd_t,sc)
    d=max(((x-y).abs()/y.abs().clamp(min=1e-3)).max().item() for x,y in zip(a[0],b[0]))
    bitwise=all(torch.equal(x,y) for x,y in zip(a[0],b[0]))
    d3=max(((x-y).abs()/y.abs().clamp(min=1e-3)).max().item() for x,y in zip(a[0],c[0]))
    # loss
    B=128; out=torch.randn(R,B,10); y=torch.randint(0,10,(R,B))
    l1=bench(lambda: torch.stack([torch.nn.functional.cross_entropy(out[r],y[r]) for r in range(R)]),500)
    l2=bench(lambda: torch.nn.functional.cross_entropy(out.reshape(-1,10),y.reshape(-1),reduction='none').view(R,B).mean(1),500)
    per=torch.stack([torch.nn.functional.cross_entropy(out[r],y[r]) for r in range(R)])
    one=torch.nn.functional.cross_entropy(out.reshape(-1,10),y.reshape(-1),reduction='none').view(R,B).mean(1)
    print(f"R={R:2d}: AdamW per-run fused kernel {t1:.3f} ms, broadcast ops {t2:.3f} ms (bitwise {bitwise}, max rel diff {d:.1e}), batched {t3:.3f} ms (max rel diff {d3:.1e}); losses: R calls {l1:.3f} ms, one call {l2:.3f} ms (bitwise {torch.equal(per,one)})")
